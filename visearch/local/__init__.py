"""The single-machine stack (`visearch run`): broker, worker and API supervised together."""
