"""Watching the bus: stats, the fates of messages, the cluster view, metrics, reconciling, dead letters."""
