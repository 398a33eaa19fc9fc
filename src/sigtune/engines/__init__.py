"""sigtune.engines."""
