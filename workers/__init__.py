"""Distributed mode: the Celery app, the run-driver and node tasks, schedules and dispatch."""
