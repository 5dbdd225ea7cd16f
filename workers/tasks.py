"""Celery tasks. Each takes a job id, re-reads the row, and is safe to receive twice."""

from __future__ import annotations

import functools
import os
import socket

from sqlalchemy.orm import Session, sessionmaker

from service.core.config import get_settings
from service.core.db import make_engine, make_sessionmaker
from service.core.storage import Storage
from workers.app import SAMPLE_TASK, TRAIN_TASK, celery_app
from workers.runner import JobRunner
from workers.sampling import sample_release


@functools.cache
def _sessions() -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(get_settings().database))


def worker_identity() -> str:
    """This process's name in leases and the audit log: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@celery_app.task(name=TRAIN_TASK, ignore_result=True, acks_late=False)
def train(job_id: str) -> str | None:
    """Train job ``job_id`` if it is still queued; a duplicate message returns at once.

    Never retried automatically: a job that spent budget must not silently train again.
    """
    settings = get_settings()
    runner = JobRunner(settings, _sessions(), Storage(settings.storage), worker_identity())
    state = runner.run(job_id)
    return None if state is None else state.value


@celery_app.task(name=SAMPLE_TASK, ignore_result=True, acks_late=False)
def sample(release_id: str) -> str:
    """Draw a pending release from its job's stored model; a duplicate finds it no longer pending."""
    settings = get_settings()
    return sample_release(_sessions(), Storage(settings.storage), release_id, owner=worker_identity())
