"""Celery app and tasks: the only place that runs training jobs.

Workers import ``models`` (the engine) and ``service.core`` (settings, database rows,
ledger, storage); they never import ``service.api``.
"""
