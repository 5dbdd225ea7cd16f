"""Faults on the scale-out topology: Redis broker, PostgreSQL database, separate processes.

A worker killed mid-training, Redis restarted under a full queue, and a duplicate message
for a running job. The job row is the source of truth throughout: a message is only
"look at job X", so losing or doubling one must change nothing a custodian can see.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from service.core.config import Settings
from service.core.queueing import QUEUES
from tests.integration.faults import dataset, final, kill_worker_mid_job_and_resume, running_api
from tests.integration.processes import Process, service_env, wait_for
from tests.integration.servers import RedisServer
from workers.app import TRAIN_TASK, broker_queue, create_celery

pytestmark = pytest.mark.slow

# A DP-GAN fit that spends long enough in DP-SGD (400 steps) to be caught there. Shorter
# than test_worker_faults.py's: the RDP accountant plans in milliseconds where PRV takes
# seconds, and 200 generator steps instead of 1500 before DP-SGD starts.
LONG_JOB = {
    "epsilon": 1.0,
    "rows": 50,
    "generator_steps": 200,
    "discriminator_share": 0.5,
    "dpsgd_epochs": 20,
    "batch_size": 16,
    "accountant": "rdp",
}
# A fit of a fraction of a second: no DP-SGD phase, a few generator steps.
SMALL_JOB = {
    "epsilon": 0.01,
    "delta": 1e-6,
    "rows": 5,
    "generator_steps": 5,
    "discriminator_share": 0.0,
    "accountant": "rdp",
}


def redis_env(tmp_path: Path, redis_url: str, postgres_url: str, **extra: str) -> dict[str, str]:
    """A throwaway service on Redis and PostgreSQL (short leases, see ``service_env``)."""
    return service_env(
        tmp_path / "data", DPSYNTH_BROKER_URL=redis_url, DPSYNTH_DATABASE_URL=postgres_url, **extra
    )


def ready(worker: Process) -> bool:
    """Whether the Celery worker is consuming (it logs ``ready.`` once connected)."""
    return " ready." in worker.log.read_text(errors="replace")


def _tail(process: Process, lines: int = 15) -> str:
    """The end of a stopped process's log, for failure messages."""
    return "\n".join(process.log.read_text(errors="replace").splitlines()[-lines:])


def sql(postgres_url: str, query: str, **params: object) -> list[sa.Row]:
    """Rows of one read-only query on the service's database."""
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(query), params))
    finally:
        engine.dispose()


def test_worker_killed_mid_job_resumes_with_one_charge(tmp_path: Path, redis_url: str, postgres_url: str):
    """Fault 1: SIGKILL mid DP-SGD; the lease runs out, a second worker resumes from the checkpoint.

    The killed worker's message stays unacknowledged in Redis (see the duplicate test below),
    but only the visibility timeout (12 h by default) would bring it back: what resumes the
    job is the reconciler, which requeues the row and sends a new message.
    """
    env = redis_env(tmp_path, redis_url, postgres_url)
    with running_api(env, tmp_path) as (_, client):
        kill_worker_mid_job_and_resume(env, client, tmp_path, {"seed": 11, **LONG_JOB})


def test_redis_restart_loses_no_queued_job(
    tmp_path: Path, redis_server: RedisServer, redis_url: str, postgres_url: str
):
    """Fault 3: Redis restarts with 100 jobs queued; all 100 succeed, each released and charged once."""
    # Unclaimed jobs get their message re-sent after 5 s (the reconcilers sweep every second).
    env = redis_env(tmp_path, redis_url, postgres_url, DPSYNTH_RESEND_SECONDS="5")
    with running_api(env, tmp_path) as (_, client):
        dataset_id = dataset(client, epsilon=2.0, rows=30, delta=1e-3)
        workers = [Process(env, "worker", log=tmp_path / f"worker{i}.log") for i in (1, 2)]
        try:
            for worker in workers:
                wait_for(lambda w=worker: ready(w), timeout=120, what=f"{worker.log.name} to be ready")
            jobs = [{"dataset_id": dataset_id, "seed": i, **SMALL_JOB} for i in range(100)]
            response = client.post("/batches", json={"jobs": jobs})
            assert response.status_code == 201, response.text
            batch_id, ids = response.json()["id"], [job["id"] for job in response.json()["jobs"]]
            with redis.Redis.from_url(redis_url) as broker:
                waiting = sum(broker.llen(broker_queue(queue)) for queue in QUEUES)
            # The test server keeps nothing on disk (no RDB, no AOF), so every message still in
            # Redis is lost here, and the workers and the API lose their connections. What brings
            # the jobs back is the reconciler: it re-sends the message of every job left queued
            # longer than DPSYNTH_RESEND_SECONDS (``jobs.stale_messages``), and the conditional
            # claim makes any message that does survive, or is sent twice, harmless.
            redis_server.restart()
            assert waiting > 0  # messages were sitting in Redis when it went down

            def all_final() -> list[dict] | None:
                batch = client.get(f"/batches/{batch_id}").json()["jobs"]
                return batch if all(job["state"] not in ("queued", "running") for job in batch) else None

            done = wait_for(all_final, timeout=240, what="all 100 jobs to end", every=1)
        finally:
            for worker in workers:
                worker.stop()
        tails = "\n".join(_tail(worker) for worker in workers)
        assert Counter(job["state"] for job in done) == {"succeeded": 100}, tails
        assert [job["attempts"] for job in done] == [1] * 100  # none claimed twice
        # Exactly one release per job, and it is the job's own.
        releases = client.get("/releases").json()
        assert Counter(release["job_id"] for release in releases) == Counter(ids)
        assert {job["release_id"] for job in done} == {release["id"] for release in releases}
        # One charge per job: the ledger is their sum, each within its reservation.
        charged = [job["epsilon_charged"] for job in done]
        assert all(0 < epsilon <= SMALL_JOB["epsilon"] for epsilon in charged)
        budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
        assert budget["epsilon_charged"] == pytest.approx(math.fsum(charged), rel=1e-12)
        assert budget["epsilon_reserved"] == 0


def _received_task_ids(worker: Process) -> list[str]:
    return re.findall(rf"Task {re.escape(TRAIN_TASK)}\[([0-9a-f-]+)\] received", worker.log.read_text())


def _running(client: httpx.Client, job_id: str) -> bool:
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] in ("queued", "running"), job
    return job["state"] == "running"


def _unacked_older_than(broker: redis.Redis, seconds: float) -> bool:
    """Whether every message Redis holds unacknowledged was delivered over ``seconds`` ago."""
    now, micro = broker.time()
    return all(
        at < now + micro / 1e6 - seconds for _, at in broker.zrange("unacked_index", 0, -1, withscores=True)
    )


def test_duplicate_message_for_a_running_job_exits_at_once(tmp_path: Path, redis_url: str, postgres_url: str):
    """Fault 4: the message of a job in training reaches a second worker, which just moves on.

    What really happens on Redis: the solo pool runs a task inside the worker's event loop,
    and Celery defers the acknowledgement to that loop (``Consumer.call_soon_ack``), so the
    message stays unacknowledged until the task returns, "acks on receipt" notwithstanding.
    Once it is older than the visibility timeout, the next worker to poll (here B, at its
    start) puts it back in the queue and receives it: the same task id, name and arguments.
    Were it acknowledged on receipt, there would be nothing to redeliver, and the test sends
    that same message itself. Either way B must find nothing to claim and move on.
    """
    visibility = 2.0
    env = redis_env(tmp_path, redis_url, postgres_url, DPSYNTH_BROKER_VISIBILITY_SECONDS=str(visibility))
    with running_api(env, tmp_path) as (_, client):
        dataset_id = dataset(client, epsilon=3.0)
        a = Process(env, "worker", log=tmp_path / "worker_a.log")
        workers = [a]
        try:
            wait_for(lambda: ready(a), timeout=120, what="worker A to be ready")
            long_job = {"dataset_id": dataset_id, "seed": 3, **LONG_JOB, "dpsgd_epochs": 40}
            job_id = client.post("/jobs", json=long_job).json()["id"]
            wait_for(lambda: _running(client, job_id), timeout=120, what="worker A to take the long job")
            (task_id,) = _received_task_ids(a)
            with redis.Redis.from_url(redis_url) as broker:
                wait_for(
                    lambda: _unacked_older_than(broker, visibility),
                    timeout=30,
                    what="the visibility timeout to pass",
                )
                redelivered = broker.hlen("unacked") == 1
            if not redelivered:  # acknowledged on receipt: send the same message again ourselves
                celery = create_celery(Settings(data_dir=tmp_path / "data", broker_url=redis_url))
                try:
                    celery.send_task(TRAIN_TASK, args=[job_id], task_id=task_id)
                finally:
                    celery.close()
            b = Process(env, "worker", log=tmp_path / "worker_b.log")
            workers.append(b)
            wait_for(
                lambda: f"wake-up for job {job_id}: no queued job" in b.log.read_text(),
                timeout=120,
                what="worker B to drop the duplicate",
            )
            assert _received_task_ids(b) == [task_id]  # the very message A is working on
            done = wait_for(
                lambda: re.search(rf"{re.escape(task_id)}\] succeeded in .*", b.log.read_text()),
                timeout=30,
                what="worker B's task to return",
            )
            assert done.group().endswith(": None")  # returned without training (see tasks.train)
            # B is free at once: a short job submitted now is done while A still trains.
            short_id = client.post("/jobs", json={"dataset_id": dataset_id, **SMALL_JOB}).json()["id"]
            short = wait_for(lambda: final(client, short_id), timeout=120, what="the short job to end")
            assert short["state"] == "succeeded", b.tail()
            assert client.get(f"/jobs/{job_id}").json()["state"] == "running"
            long = wait_for(lambda: final(client, job_id), timeout=240, what="the long job to end")
        finally:
            for worker in workers:
                worker.stop()
        assert long["state"] == "succeeded", _tail(a)
        assert long["attempts"] == 1
        # Who claimed what, from the audit log: A the long job, once; B the short one.
        claims = sql(
            postgres_url,
            "SELECT object_id, actor FROM audit_events WHERE action = 'job.running' ORDER BY seq",
        )
        assert [(row.object_id, row.actor.rsplit(":", 1)[1]) for row in claims] == [
            (job_id, str(a.popen.pid)),
            (short_id, str(b.popen.pid)),
        ]
        releases = [release["job_id"] for release in client.get("/releases").json()]
        assert Counter(releases) == {job_id: 1, short_id: 1}
        budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
        assert budget["epsilon_charged"] == pytest.approx(long["epsilon_charged"] + short["epsilon_charged"])
        assert budget["epsilon_reserved"] == 0
