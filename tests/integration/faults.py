"""What the fault tests share: a running API, job polls, and the kill-a-worker scenario.

The scenario runs on whatever broker and database ``env`` names, so the embedded broker
(test_worker_faults.py) and Redis with PostgreSQL (test_faults_redis.py) check the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.helpers import csv_bytes, upload
from tests.integration.processes import Process, Server, cli, wait_for


@contextmanager
def running_api(env: dict[str, str], log_dir: Path) -> Iterator[tuple[Server, httpx.Client]]:
    """``dpsynth serve --no-worker`` (whose reconciler sweeps leases) and a custodian's client."""
    cli(env, "admin", "create-tenant", "acme")
    token = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    server = Server(env, "--no-worker", log=log_dir / "serve.log")
    client = httpx.Client(base_url=server.url, headers={"X-API-Key": token}, timeout=30)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()


def dataset(
    client: httpx.Client, epsilon: float = 3.0, *, rows: int = 400, delta: float | None = None
) -> str:
    """Upload the small mixed table with ``rows`` rows and give it a budget; returns its id."""
    response = upload(client, csv_bytes(rows))
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    budget = client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": epsilon, "delta": delta})
    assert budget.status_code == 200, budget.text
    return dataset_id


def in_dp_sgd(client: httpx.Client, job_id: str) -> dict | None:
    """The job once it reports DP-SGD (dp-gan) progress with over a tenth of all its steps done."""
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] in ("queued", "running"), job
    return job if job["phase"] == "dp-gan" and job["progress"] > 0.1 else None


def past(job: dict | None, progress: float) -> dict | None:
    """``job`` if its progress is beyond ``progress``."""
    return job if job is not None and job["progress"] > progress else None


def final(client: httpx.Client, job_id: str) -> dict | None:
    """The job once it ended."""
    job = client.get(f"/jobs/{job_id}").json()
    return job if job["state"] in ("succeeded", "failed", "cancelled") else None


def requeued(client: httpx.Client, job_id: str) -> dict | None:
    """The job once the reconciler put it back in the queue after its first attempt."""
    job = client.get(f"/jobs/{job_id}").json()
    return job if job["state"] == "queued" and job["attempts"] == 1 else None


def resumed_phase(client: httpx.Client, job_id: str) -> str | None:
    """The first phase the second attempt reports (``starting`` is the claim's, not the engine's)."""
    job = client.get(f"/jobs/{job_id}").json()
    return job["phase"] if job["attempts"] == 2 and job["phase"] not in ("requeued", "starting") else None


def kill_worker_mid_job_and_resume(
    env: dict[str, str], client: httpx.Client, log_dir: Path, options: dict[str, Any]
) -> None:
    """SIGKILL a worker in DP-SGD; another resumes the job: one charge, one release, as uninterrupted."""
    epsilon = options["epsilon"]
    dataset_id = dataset(client, epsilon=3 * epsilon)
    job = {"dataset_id": dataset_id, **options}
    first = Process(env, "worker", log=log_dir / "worker1.log")
    try:
        job_id = client.post("/jobs", json=job).json()["id"]
        seen = wait_for(lambda: in_dp_sgd(client, job_id), timeout=180, what="the job to be in DP-SGD")
        # The worker ships its checkpoint to shared storage right after each progress write: once
        # a later write shows, the checkpoint of the phases before DP-SGD is there to resume from.
        killed_at = wait_for(
            lambda: past(in_dp_sgd(client, job_id), seen["progress"]), timeout=60, what="more DP-SGD"
        )
        first.kill()  # SIGKILL: no cleanup, no final write
    finally:
        first.stop()
    # No worker is alive: the API process's reconciler puts the job back once its lease runs out,
    # reservation kept, nothing charged yet.
    wait_for(lambda: requeued(client, job_id), timeout=60, what="the reconciler to requeue the job")
    ledger = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert ledger["epsilon_reserved"] == pytest.approx(epsilon)
    assert ledger["epsilon_charged"] == 0

    second = Process(env, "worker", log=log_dir / "worker2.log")
    try:
        # Resumed from the checkpoint: straight back into DP-SGD, the phases before it not run again.
        phase = wait_for(lambda: resumed_phase(client, job_id), timeout=240, what="the second attempt")
        assert phase in ("dp-gan", "done"), phase
        resumed = wait_for(lambda: final(client, job_id), timeout=240, what="the resumed job to finish")
        assert resumed["state"] == "succeeded", second.tail()
        # The same job run uninterrupted, for the epsilon it must match.
        again = client.post("/jobs", json=job).json()["id"]
        straight = wait_for(lambda: final(client, again), timeout=240, what="the uninterrupted run")
        assert straight["state"] == "succeeded", second.tail()
    finally:
        second.stop()
    assert resumed["attempts"] == 2
    assert resumed["epsilon_charged"] == pytest.approx(straight["epsilon_charged"], rel=1e-9)
    cert = client.get(f"/releases/{resumed['release_id']}/certificate").json()
    straight_cert = client.get(f"/releases/{straight['release_id']}/certificate").json()
    steps = {m["name"]: m["steps"] for m in cert["mechanisms"]}
    assert steps == {m["name"]: m["steps"] for m in straight_cert["mechanisms"]}  # no step counted twice
    assert resumed["epsilon_spent"] >= killed_at["epsilon_spent"]
    # Exactly one release per job (none from the killed attempt) and one charge each:
    # the ledger is the sum of the two runs.
    releases = [r for r in client.get("/releases").json() if r["job_id"] == job_id]
    assert [r["id"] for r in releases] == [resumed["release_id"]]
    budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert budget["epsilon_charged"] == pytest.approx(
        resumed["epsilon_charged"] + straight["epsilon_charged"]
    )
    assert budget["epsilon_reserved"] == 0
