"""The `visearch` command line."""
