"""Model versions: the served model, rollout, backfill, training runs."""
