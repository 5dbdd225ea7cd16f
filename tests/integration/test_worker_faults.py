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


def test_worker_killed_mid_job_is_failed_and_charged_then_the_queue_flows(api, tmp_path: Path):
    env, _, client = api
    dataset_id = _dataset(client)
    first = Process(env, "worker", log=tmp_path / "worker1.log")
    try:
        job_id = client.post("/jobs", json={"dataset_id": dataset_id, **LONG_JOB}).json()["id"]
        wait_for(lambda: _in_dp_sgd(client, job_id), timeout=180, what="the job to be in DP-SGD")
        first.kill()  # SIGKILL: no cleanup, no final write
    finally:
        first.stop()
    # No worker is alive; the API process's reconciler settles the job once the lease runs out.
    job = wait_for(lambda: _final(client, job_id), timeout=60, what="the reconciler to settle the job")
    assert job["state"] == "failed"
    assert "lease" in job["error"]
    assert job["epsilon_charged"] == pytest.approx(LONG_JOB["epsilon"])  # the whole reservation
    assert job["release_id"] is None
    ledger = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert ledger["epsilon_charged"] == pytest.approx(1.0)
    assert ledger["epsilon_reserved"] == 0

    # A new worker picks up new work; the dead job is not run again.
    second = Process(env, "worker", log=tmp_path / "worker2.log")
    try:
        quick = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.5, "rows": 20}).json()["id"]
        done = wait_for(lambda: _final(client, quick), timeout=180, what="the next job to finish")
        assert done["state"] == "succeeded", second.tail()
        assert client.get(f"/jobs/{job_id}").json()["attempts"] == 1
    finally:
        second.stop()
    ledger = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert ledger["epsilon_charged"] == pytest.approx(1.0 + done["epsilon_charged"])


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
