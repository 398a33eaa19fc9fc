"""sigtune.reports."""
