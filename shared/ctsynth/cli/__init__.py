"""The `ctsynth` command line."""
