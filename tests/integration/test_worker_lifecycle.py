"""Workers that stop, jobs that need too much, and jobs routed by device: real processes throughout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.helpers import csv_bytes, upload
from tests.integration.processes import Process, Server, cli, service_env, wait_for

LONG_JOB = {"epsilon": 1.0, "rows": 50, "discriminator_share": 0.5, "dpsgd_epochs": 40, "batch_size": 16}
QUICK_JOB = {"epsilon": 0.2, "rows": 50, "generator_steps": 200, "discriminator_share": 0.0}


def _api(tmp_path: Path, **extra: str) -> tuple[dict[str, str], Server, httpx.Client]:
    env = service_env(tmp_path / "data", **extra)
    cli(env, "admin", "create-tenant", "acme")
    token = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    server = Server(env, "--no-worker", log=tmp_path / "serve.log")
    return env, server, httpx.Client(base_url=server.url, headers={"X-API-Key": token}, timeout=30)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[dict[str, str], httpx.Client]]:
    env, server, client = _api(tmp_path)
    try:
        yield env, client
    finally:
        client.close()
        server.stop()


def _dataset(client: httpx.Client, epsilon: float = 5.0) -> str:
    dataset_id = upload(client, csv_bytes(400)).json()["id"]
    assert client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": epsilon}).status_code == 200
    return dataset_id


def _job(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/jobs/{job_id}").json()


def _final(client: httpx.Client, job_id: str) -> dict | None:
    job = _job(client, job_id)
    return job if job["state"] in ("succeeded", "failed", "cancelled") else None


def test_sigterm_mid_training_checkpoints_hands_back_and_resumes_to_the_same_epsilon(api, tmp_path: Path):
    env, client = api
    dataset_id = _dataset(client)
    job = {"dataset_id": dataset_id, "seed": 5, **LONG_JOB}
    first = Process(env, "worker", log=tmp_path / "worker1.log")
    try:
        job_id = client.post("/jobs", json=job).json()["id"]

        def halfway() -> dict | None:
            now = _job(client, job_id)
            return now if now["phase"] == "dp-gan" and now["progress"] >= 0.5 else None

        at_sigterm = wait_for(halfway, timeout=240, what="the job to be half way through DP-SGD")
        # Warm shutdown: the worker stops the job at its next step and exits by itself.
        assert first.terminate(timeout=60) == 0, first.tail()
    finally:
        first.stop()
    handed = _job(client, job_id)
    assert (handed["state"], handed["phase"], handed["attempts"]) == ("queued", "requeued", 0), handed
    assert handed["epsilon_charged"] is None  # nothing charged yet: the checkpoint carries the spend
    assert handed["epsilon_spent"] >= at_sigterm["epsilon_spent"]
    assert (tmp_path / "data" / "storage" / "jobs" / job_id / "checkpoint.pt").is_file()
    assert "Warm shutdown" in first.log.read_text()

    second = Process(env, "worker", log=tmp_path / "worker2.log")
    try:
        resumed = wait_for(lambda: _final(client, job_id), timeout=240, what="the resumed job to finish")
        assert resumed["state"] == "succeeded", second.tail()
        straight_id = client.post("/jobs", json=job).json()["id"]
        straight = wait_for(lambda: _final(client, straight_id), timeout=240, what="an uninterrupted run")
        assert straight["state"] == "succeeded", second.tail()
    finally:
        second.stop()
    assert resumed["attempts"] == 1  # the clean stop did not count as a failed attempt
    assert resumed["epsilon_charged"] == pytest.approx(straight["epsilon_charged"], rel=1e-9)
    cert = client.get(f"/releases/{resumed['release_id']}/certificate").json()
    straight_cert = client.get(f"/releases/{straight['release_id']}/certificate").json()
    steps = {m["name"]: m["steps"] for m in cert["mechanisms"]}
    assert steps == {m["name"]: m["steps"] for m in straight_cert["mechanisms"]}
    assert not (tmp_path / "data" / "storage" / "jobs" / job_id / "checkpoint.pt").exists()
    assert len([r for r in client.get("/releases").json() if r["job_id"] == job_id]) == 1


def test_job_over_its_memory_limit_fails_after_two_attempts_and_other_jobs_flow(tmp_path: Path):
    # 300 MB per job fits a small fit and a small release; 100 million rows of release do not.
    env, server, client = _api(tmp_path, DPSYNTH_JOB_MEMORY_MB="300")
    worker = Process(env, "worker", log=tmp_path / "worker.log")
    try:
        dataset_id = _dataset(client)
        poison = client.post(
            "/jobs", json={"dataset_id": dataset_id, **QUICK_JOB, "rows": 100_000_000}
        ).json()["id"]
        healthy = [
            client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB}).json()["id"] for _ in range(2)
        ]
        failed = wait_for(lambda: _final(client, poison), timeout=240, what="the poison job to fail")
        done = [wait_for(lambda j=j: _final(client, j), timeout=240, what="the other jobs") for j in healthy]
        assert worker.popen.poll() is None, worker.tail()  # the worker survived both attempts
    finally:
        worker.stop()
        client.close()
        server.stop()
    assert failed["state"] == "failed" and failed["attempts"] == 2, failed
    assert "ran out of memory (limit 300 MB per job), 2 times; given up" in failed["error"]
    assert failed["epsilon_charged"] == pytest.approx(QUICK_JOB["epsilon"])  # what it may have spent
    assert [job["state"] for job in done] == ["succeeded", "succeeded"]


def test_jobs_go_to_workers_of_their_queue_which_report_their_device(tmp_path: Path):
    # Tables over 100 rows count as large here: they go to the GPU queue.
    env, server, client = _api(tmp_path, DPSYNTH_CPU_MAX_ROWS="100")
    cpu_worker = Process({**env, "DPSYNTH_WORKER_QUEUES": "cpu"}, "worker", log=tmp_path / "cpu.log")
    gpu_worker = Process({**env, "DPSYNTH_WORKER_QUEUES": "gpu"}, "worker", log=tmp_path / "gpu.log")
    try:
        dataset_id = _dataset(client)  # 400 rows
        large = client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB}).json()
        small = client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB, "device": "cpu"}).json()
        assert (large["queue"], small["queue"]) == ("gpu", "cpu")
        large = wait_for(lambda: _final(client, large["id"]), timeout=240, what="the GPU-queue job")
        small = wait_for(lambda: _final(client, small["id"]), timeout=240, what="the CPU-queue job")
        listing = cli(env, "admin", "workers").stdout
    finally:
        cpu_worker.stop()
        gpu_worker.stop()
        client.close()
        server.stop()
    assert large["state"] == small["state"] == "succeeded"
    assert large["worker"].endswith(f":{gpu_worker.popen.pid}") and large["device"].startswith("cpu (")
    assert small["worker"].endswith(f":{cpu_worker.popen.pid}")
    lines = {line.split()[0]: line for line in listing.splitlines()}
    assert "queues gpu " in lines[large["worker"]] and "alive" in lines[large["worker"]]
    assert "queues cpu " in lines[small["worker"]]


def test_tenant_running_jobs_limit_holds_with_real_workers(tmp_path: Path):
    """Two workers, a tenant limited to one running job: its jobs never overlap, and all finish."""
    env, server, client = _api(tmp_path)
    said = cli(env, "admin", "set-tenant", "acme", "--max-running-jobs", "1", "--priority", "3").stdout
    assert "tenant acme: priority 3, at most 1 running jobs" in said
    workers = [Process(env, "worker", log=tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        dataset_id = _dataset(client)
        ids = [
            client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB}).json()["id"] for _ in range(3)
        ]
        done = [wait_for(lambda j=j: _final(client, j), timeout=300, what="the limited jobs") for j in ids]
    finally:
        for worker in workers:
            worker.stop()
        client.close()
        server.stop()
    assert [job["state"] for job in done] == ["succeeded"] * 3
    spans = sorted((job["started_at"], job["finished_at"]) for job in done)
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False)), spans
