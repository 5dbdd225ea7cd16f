"""A worker killed mid-job, and a job cancelled mid-training: real processes, real charges.

A long job here is a real DP-GAN fit (many small DP-SGD steps), so it is mid-training
for long enough to be killed or cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.helpers import csv_bytes, upload
from tests.integration.processes import Process, Server, cli, service_env, wait_for

LONG_JOB = {"epsilon": 1.0, "rows": 50, "discriminator_share": 0.5, "dpsgd_epochs": 40, "batch_size": 16}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[dict[str, str], Server, httpx.Client]]:
    env = service_env(tmp_path / "data")
    cli(env, "admin", "create-tenant", "acme")
    token = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    server = Server(env, "--no-worker", log=tmp_path / "serve.log")
    client = httpx.Client(base_url=server.url, headers={"X-API-Key": token}, timeout=30)
    try:
        yield env, server, client
    finally:
        client.close()
        server.stop()


def _dataset(client: httpx.Client, epsilon: float = 3.0) -> str:
    dataset_id = upload(client, csv_bytes(400)).json()["id"]
    assert client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": epsilon}).status_code == 200
    return dataset_id


def _in_dp_sgd(client: httpx.Client, job_id: str) -> dict | None:
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] in ("queued", "running"), job
    return job if job["phase"] == "dp-gan" and job["progress"] > 0.1 else None


def _final(client: httpx.Client, job_id: str) -> dict | None:
    job = client.get(f"/jobs/{job_id}").json()
    return job if job["state"] in ("succeeded", "failed", "cancelled") else None


def _requeued(client: httpx.Client, job_id: str) -> dict | None:
    job = client.get(f"/jobs/{job_id}").json()
    return job if job["state"] == "queued" and job["attempts"] == 1 else None


def test_worker_killed_mid_job_resumes_on_another_worker_with_one_charge(api, tmp_path: Path):
    env, _, client = api
    dataset_id = _dataset(client)
    job = {"dataset_id": dataset_id, "seed": 11, **LONG_JOB}
    first = Process(env, "worker", log=tmp_path / "worker1.log")
    try:
        job_id = client.post("/jobs", json=job).json()["id"]
        killed_at = wait_for(lambda: _in_dp_sgd(client, job_id), timeout=180, what="the job to be in DP-SGD")
        first.kill()  # SIGKILL: no cleanup, no final write
    finally:
        first.stop()
    # No worker is alive: the API process's reconciler puts the job back once its lease runs out,
    # reservation kept, nothing charged yet.
    wait_for(lambda: _requeued(client, job_id), timeout=60, what="the reconciler to requeue the job")
    assert client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]["epsilon_reserved"] == pytest.approx(
        1.0
    )

    second = Process(env, "worker", log=tmp_path / "worker2.log")
    try:
        resumed = wait_for(lambda: _final(client, job_id), timeout=240, what="the resumed job to finish")
        assert resumed["state"] == "succeeded", second.tail()
        # The same job run uninterrupted, for the epsilon it must match.
        again = client.post("/jobs", json={**job, "dataset_id": dataset_id}).json()["id"]
        straight = wait_for(lambda: _final(client, again), timeout=240, what="the uninterrupted run")
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
    # Exactly one release per job and one charge each: the ledger is the sum of the two runs.
    releases = [r for r in client.get("/releases").json() if r["job_id"] == job_id]
    assert len(releases) == 1
    budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert budget["epsilon_charged"] == pytest.approx(
        resumed["epsilon_charged"] + straight["epsilon_charged"]
    )
    assert budget["epsilon_reserved"] == 0


def test_cancel_mid_training_charges_what_was_spent(api, tmp_path: Path):
    env, _, client = api
    dataset_id = _dataset(client)
    worker = Process(env, "worker", log=tmp_path / "worker.log")
    try:
        job_id = client.post("/jobs", json={"dataset_id": dataset_id, **LONG_JOB}).json()["id"]
        running = wait_for(lambda: _in_dp_sgd(client, job_id), timeout=180, what="the job to be in DP-SGD")
        assert client.post(f"/jobs/{job_id}/cancel").json()["cancel_requested"] is True
        job = wait_for(lambda: _final(client, job_id), timeout=60, what="the job to stop")
    finally:
        worker.stop()
    assert job["state"] == "cancelled", job
    assert job["release_id"] is None
    # Charged what the engine spent: at least what progress showed, less than the reservation.
    assert running["epsilon_spent"] <= job["epsilon_charged"] < LONG_JOB["epsilon"]
    budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert budget["epsilon_remaining"] == pytest.approx(3.0 - job["epsilon_charged"])


def test_cancel_a_queued_job_costs_nothing(api):
    _, _, client = api
    dataset_id = _dataset(client)
    job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 1.0, "rows": 5}).json()["id"]
    job = client.post(f"/jobs/{job_id}/cancel").json()
    assert (job["state"], job["epsilon_charged"]) == ("cancelled", 0.0)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 409
    assert client.get(f"/datasets/{dataset_id}/ledger").json()["budget"][
        "epsilon_remaining"
    ] == pytest.approx(3.0)
