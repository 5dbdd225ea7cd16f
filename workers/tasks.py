"""Celery tasks. A message only wakes a worker: the rows say what to do, so receiving one twice is safe."""

from __future__ import annotations

import functools
import logging
import os
import socket
from typing import Any

from celery.signals import worker_shutting_down
from sqlalchemy.orm import Session, sessionmaker

from service.core import queueing
from service.core.config import get_settings
from service.core.db import make_engine, make_sessionmaker, transaction
from service.core.storage import Storage
from workers.app import SAMPLE_TASK, TRAIN_TASK, celery_app, send
from workers.profile import WorkerProfile, worker_profile
from workers.runner import SHUTTING_DOWN, JobRunner, Ran
from workers.sampling import sample_release

log = logging.getLogger(__name__)


@functools.cache
def _sessions() -> sessionmaker[Session]:
    return make_sessionmaker(make_engine(get_settings().database))


@functools.cache
def profile() -> WorkerProfile:
    """This worker's device and queues (read once)."""
    return worker_profile(get_settings())


def worker_identity() -> str:
    """This process's name in leases and the audit log: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@worker_shutting_down.connect
def _shutting_down(**_: Any) -> None:
    # Warm shutdown (SIGTERM): the running job checkpoints at its next step and is handed back.
    SHUTTING_DOWN.set()


@celery_app.task(name=TRAIN_TASK, ignore_result=True, acks_late=False)
def train(job_id: str) -> str | None:
    """Claim and train the job this worker should run next (``job_id`` is the one that sent the wake-up).

    Never retried by Celery: a job that spent budget must not silently train again; the
    rows decide about retries (see ``service.core.jobs``).
    """
    if SHUTTING_DOWN.is_set():
        # Celery may still hand a stopping worker a message: pass the wake-up on, unused.
        with transaction(_sessions()) as session:
            queue = queueing.queues_of(session, [job_id]).get(job_id, queueing.CPU)
        send(celery_app, TRAIN_TASK, job_id, queue=queue)
        return None
    settings = get_settings()
    runner = JobRunner(settings, _sessions(), Storage(settings.storage), worker_identity(), profile())
    ran = runner.run_next()
    if ran is None:
        log.info("wake-up for job %s: no queued job this worker may run now (taken, limited or none)", job_id)
        return None
    _wake_after(ran)
    return ran.state.value


def _wake_after(ran: Ran) -> None:
    """Wake workers for what may run now.

    That is the job itself if it went back to the queue, and the tenant's next job, whose
    own message may have come while the tenant was at its limit.
    """
    with transaction(_sessions()) as session:
        waiting = queueing.next_waiting(session, ran.tenant_id)
    wake = {waiting} if waiting else set()
    if not ran.state.final:
        wake.add((ran.job_id, ran.queue))
    for job_id, queue in wake:
        try:
            send(celery_app, TRAIN_TASK, job_id, queue=queue)
        except Exception:  # the reconciler re-sends what stays queued
            log.exception("could not send a wake-up for job %s", job_id)


@celery_app.task(name=SAMPLE_TASK, ignore_result=True, acks_late=False)
def sample(release_id: str) -> str:
    """Draw a pending release from its job's stored model; a duplicate finds it no longer pending."""
    settings = get_settings()
    return sample_release(_sessions(), Storage(settings.storage), release_id, owner=worker_identity())
