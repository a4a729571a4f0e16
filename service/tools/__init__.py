"""Offline tools beside the service: the throughput benchmark and the classifier train/eval commands."""
