"""The periodic sweep that settles jobs whose worker died (their lease ran out)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from service.core import jobs, queueing
from service.core.db import transaction
from workers.app import SAMPLE_TASK, TRAIN_TASK, send

log = logging.getLogger(__name__)


def reconcile_once(
    sessions: sessionmaker[Session], celery: Celery | None = None, *, resend_after: float = 600.0
) -> jobs.Reconciled:
    """Requeue or fail every expired lease now; re-send messages that may be lost."""
    with transaction(sessions) as session:
        done = jobs.reconcile(session)
    for job_id in done.failed:
        log.warning("job %s: %s too often; failed and charged its reservation", job_id, jobs.WORKER_LOST)
    for job_id in done.requeued:
        log.warning("job %s: %s; back in the queue to resume from its checkpoint", job_id, jobs.WORKER_LOST)
    if celery is not None:
        with transaction(sessions) as session:
            queued, pending = jobs.stale_messages(session, older_than=resend_after)
            queues = queueing.queues_of(session, [*done.requeued, *queued])
        resend = [(TRAIN_TASK, job_id, queue) for job_id, queue in queues.items()]
        resend += [(SAMPLE_TASK, release_id, queueing.CPU) for release_id in pending]
        for task, object_id, queue in resend:
            log.warning("sending %s %s (again)", task, object_id)
            send(celery, task, object_id, queue=queue)
    return done


class Reconciler(threading.Thread):
    """Every ``interval`` seconds: ``on_sweep`` (housekeeping), then ``reconcile_once``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        interval: float,
        celery: Celery | None = None,
        resend_after: float = 600.0,
        on_sweep: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="reconciler", daemon=True)
        self.sessions, self.interval = sessions, interval
        self.celery, self.resend_after, self.on_sweep = celery, resend_after, on_sweep
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Sweep until stopped; a failed sweep is logged and retried."""
        while not self._stop_event.wait(self.interval):
            if self.on_sweep is not None:
                try:
                    self.on_sweep()
                except Exception:
                    log.exception("housekeeping before the sweep failed")
            try:
                reconcile_once(self.sessions, self.celery, resend_after=self.resend_after)
            except Exception:
                log.exception("reconcile sweep failed")

    def stop(self) -> None:
        """Stop sweeping."""
        self._stop_event.set()
