"""Workers that stop, jobs that need too much, and jobs routed by device: real processes throughout."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.integration.faults import dataset, final, running_api
from tests.integration.processes import Process, cli, service_env, wait_for

LONG_JOB = {"epsilon": 1.0, "rows": 50, "discriminator_share": 0.5, "dpsgd_epochs": 40, "batch_size": 16}
QUICK_JOB = {"epsilon": 0.2, "rows": 50, "generator_steps": 200, "discriminator_share": 0.0}


def _job(client: httpx.Client, job_id: str) -> dict:
    return client.get(f"/jobs/{job_id}").json()


def test_sigterm_mid_training_checkpoints_hands_back_and_resumes_to_the_same_epsilon(tmp_path: Path):
    env = service_env(tmp_path / "data")
    with running_api(env, tmp_path) as (_, client):
        _sigterm_and_resume(env, client, tmp_path)


def _sigterm_and_resume(env: dict[str, str], client: httpx.Client, tmp_path: Path) -> None:
    dataset_id = dataset(client, epsilon=5.0)
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
        resumed = wait_for(lambda: final(client, job_id), timeout=240, what="the resumed job to finish")
        assert resumed["state"] == "succeeded", second.tail()
        straight_id = client.post("/jobs", json=job).json()["id"]
        straight = wait_for(lambda: final(client, straight_id), timeout=240, what="an uninterrupted run")
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


@contextmanager
def _workers(env: dict[str, str], log_dir: Path, *queues: str) -> Iterator[list[Process]]:
    """One ``dpsynth worker`` per entry of ``queues`` ("" = the default queues), stopped after."""
    workers = [
        Process({**env, "DPSYNTH_WORKER_QUEUES": q} if q else env, "worker", log=log_dir / f"worker{i}.log")
        for i, q in enumerate(queues)
    ]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def test_job_over_its_memory_limit_fails_after_two_attempts_and_other_jobs_flow(tmp_path: Path):
    # 300 MB per job fits a small fit and a small release; 100 million rows of release do not.
    env = service_env(tmp_path / "data", DPSYNTH_JOB_MEMORY_MB="300")
    with running_api(env, tmp_path) as (_, client), _workers(env, tmp_path, "") as (worker,):
        dataset_id = dataset(client, epsilon=5.0)
        poison = client.post(
            "/jobs", json={"dataset_id": dataset_id, **QUICK_JOB, "rows": 100_000_000}
        ).json()["id"]
        healthy = [
            client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB}).json()["id"] for _ in range(2)
        ]
        failed = wait_for(lambda: final(client, poison), timeout=240, what="the poison job to fail")
        done = [wait_for(lambda j=j: final(client, j), timeout=240, what="the other jobs") for j in healthy]
        assert worker.popen.poll() is None, worker.tail()  # the worker survived both attempts
    assert failed["state"] == "failed" and failed["attempts"] == 2, failed
    assert "ran out of memory (limit 300 MB per job), 2 times; given up" in failed["error"]
    assert failed["epsilon_charged"] == pytest.approx(QUICK_JOB["epsilon"])  # what it may have spent
    assert [job["state"] for job in done] == ["succeeded", "succeeded"]


def test_jobs_go_to_workers_of_their_queue_which_report_their_device(tmp_path: Path):
    # Tables over 100 rows count as large here: they go to the GPU queue.
    env = service_env(tmp_path / "data", DPSYNTH_CPU_MAX_ROWS="100")
    with running_api(env, tmp_path) as (_, client), _workers(env, tmp_path, "cpu", "gpu") as workers:
        dataset_id = dataset(client, epsilon=5.0)  # 400 rows
        large = client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB}).json()
        small = client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB, "device": "cpu"}).json()
        assert (large["queue"], small["queue"]) == ("gpu", "cpu")
        large = wait_for(lambda: final(client, large["id"]), timeout=240, what="the GPU-queue job")
        small = wait_for(lambda: final(client, small["id"]), timeout=240, what="the CPU-queue job")
        listing = cli(env, "admin", "workers").stdout
    cpu_worker, gpu_worker = workers
    assert large["state"] == small["state"] == "succeeded"
    assert large["worker"].endswith(f":{gpu_worker.popen.pid}") and large["device"].startswith("cpu (")
    assert small["worker"].endswith(f":{cpu_worker.popen.pid}")
    lines = {line.split()[0]: line for line in listing.splitlines()}
    assert "queues gpu " in lines[large["worker"]] and "alive" in lines[large["worker"]]
    assert "queues cpu " in lines[small["worker"]]


def test_tenant_running_jobs_limit_holds_with_real_workers(tmp_path: Path):
    """Two workers, a tenant limited to one running job: its jobs never overlap, and all finish."""
    env = service_env(tmp_path / "data")
    with running_api(env, tmp_path) as (_, client), _workers(env, tmp_path, "", ""):
        said = cli(env, "admin", "set-tenant", "acme", "--max-running-jobs", "1", "--priority", "3").stdout
        assert "tenant acme: priority 3, at most 1 running jobs" in said
        dataset_id = dataset(client, epsilon=5.0)
        ids = [
            client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB}).json()["id"] for _ in range(3)
        ]
        done = [wait_for(lambda j=j: final(client, j), timeout=300, what="the limited jobs") for j in ids]
    assert [job["state"] for job in done] == ["succeeded"] * 3
    spans = sorted((job["started_at"], job["finished_at"]) for job in done)
    assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:], strict=False)), spans
