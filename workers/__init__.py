"""Celery app and tasks: the only place that runs training jobs (built in a later issue)."""
