"""What each process of a deployment runs besides the API: worker, shards, feedback."""
