"""sigtune.pipelines."""
