"""A worker killed mid-job, and a job cancelled mid-training: real processes, real charges.

A long job here is a real DP-GAN fit (many small DP-SGD steps), so it is mid-training
for long enough to be killed or cancelled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.faults import dataset, final, in_dp_sgd, kill_worker_mid_job_and_resume, running_api
from tests.integration.processes import Process, service_env, wait_for

LONG_JOB = {"epsilon": 1.0, "rows": 50, "discriminator_share": 0.5, "dpsgd_epochs": 40, "batch_size": 16}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[dict[str, str], httpx.Client]]:
    env = service_env(tmp_path / "data")
    with running_api(env, tmp_path) as (_, client):
        yield env, client


def test_worker_killed_mid_job_resumes_on_another_worker_with_one_charge(api, tmp_path: Path):
    env, client = api
    kill_worker_mid_job_and_resume(env, client, tmp_path, {"seed": 11, **LONG_JOB})


def test_cancel_mid_training_charges_what_was_spent(api, tmp_path: Path):
    env, client = api
    dataset_id = dataset(client)
    worker = Process(env, "worker", log=tmp_path / "worker.log")
    try:
        job_id = client.post("/jobs", json={"dataset_id": dataset_id, **LONG_JOB}).json()["id"]
        running = wait_for(lambda: in_dp_sgd(client, job_id), timeout=180, what="the job to be in DP-SGD")
        assert client.post(f"/jobs/{job_id}/cancel").json()["cancel_requested"] is True
        job = wait_for(lambda: final(client, job_id), timeout=60, what="the job to stop")
    finally:
        worker.stop()
    assert job["state"] == "cancelled", job
    assert job["release_id"] is None
    # Charged what the engine spent: at least what progress showed, less than the reservation.
    assert running["epsilon_spent"] <= job["epsilon_charged"] < LONG_JOB["epsilon"]
    budget = client.get(f"/datasets/{dataset_id}/ledger").json()["budget"]
    assert budget["epsilon_remaining"] == pytest.approx(3.0 - job["epsilon_charged"])


def test_cancel_a_queued_job_costs_nothing(api):
    _, client = api
    dataset_id = dataset(client)
    job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 1.0, "rows": 5}).json()["id"]
    job = client.post(f"/jobs/{job_id}/cancel").json()
    assert (job["state"], job["epsilon_charged"]) == ("cancelled", 0.0)
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 409
    assert client.get(f"/datasets/{dataset_id}/ledger").json()["budget"][
        "epsilon_remaining"
    ] == pytest.approx(3.0)
