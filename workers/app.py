"""The Celery app, configured from ``Settings``.

The job row is the source of truth, so the broker only carries "wake up, there is work":
a worker then claims the job it should run from the rows (``service.core.queueing``), so a
duplicate or redelivered message finds nothing to claim, and a lost one is re-sent by the
reconciler from the jobs table. Tasks ask for acks on receipt, but on Redis Celery's event
loop sends the ack of a solo-pool task only when it returns: a message older than the
visibility timeout (``DPSYNTH_BROKER_VISIBILITY_SECONDS``) comes back while its job still
trains, and is dropped by the claim (tested).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from celery import Celery
from kombu import Queue
from kombu.transport import sqlalchemy as sql_transport
from sqlalchemy.exc import IntegrityError, OperationalError

from service.core.config import Settings, get_settings
from service.core.queueing import CPU, QUEUES

TRAIN_TASK = "dpsynth.train"
SAMPLE_TASK = "dpsynth.sample"


def broker_queue(queue: str) -> str:
    """The broker's name for one of our queues (``gpu`` or ``cpu``)."""
    return f"dpsynth.{queue}"


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``' broker (the SQLite-backed default needs no server)."""
    broker = settings.broker
    if broker.startswith("sqla+"):
        # kombu hands every broker_transport_option to create_engine, so the polling
        # interval of the SQL transport can only be set on the transport class.
        sql_transport.Transport.polling_interval = settings.broker_poll_seconds
    app = Celery("dpsynth", broker=broker, include=["workers.tasks"])
    app.conf.update(
        task_default_queue=broker_queue(CPU),
        task_queues=[Queue(broker_queue(queue)) for queue in QUEUES],
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_transport_options=(
            {"visibility_timeout": settings.broker_visibility_seconds} if broker.startswith("redis") else {}
        ),
    )
    return app


def prepare_broker(settings: Settings) -> None:
    """Make sure an embedded SQLite broker has a directory to live in."""
    if settings.broker.startswith("sqla+sqlite:///"):
        Path(settings.broker.removeprefix("sqla+sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def declare_queues(app: Celery) -> None:
    """Create the queues once, before several workers start (on the SQL broker they race on names)."""
    for queue in QUEUES:
        for _ in range(5):
            with contextlib.suppress(IntegrityError, OperationalError), app.connection_for_write() as conn:
                Queue(broker_queue(queue), channel=conn.default_channel).declare()
                break
        else:
            raise RuntimeError(f"could not declare the broker queue {queue!r} at {app.conf.broker_url}")


def send(app: Celery, task: str, object_id: str, *, queue: str = CPU) -> None:
    """Wake a worker of ``queue`` for ``task`` on a committed row (the row says what to do)."""
    app.send_task(task, args=[object_id], queue=broker_queue(queue))


celery_app = create_celery(get_settings())
