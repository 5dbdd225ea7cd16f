"""Queue and service at scale: the scale-out topology on this machine, measured.

Usage: PYTHONPATH=. python bench/queue_load.py [--jobs 20] [--rates 25 100] [--rate-seconds 20]
    [--clients 8] [--upload-mb 1000]

Starts PostgreSQL and Redis natively (the integration tests' throwaway servers), then
``dpsynth serve --no-worker`` and two ``dpsynth worker`` processes on them, with the
service's default settings otherwise. Measures, in this order:

1. the upload of a generated CSV of ``--upload-mb`` MB through the API (a streamed raw
   body): throughput, and the API process's peak RSS (VmHWM) before and after;
2. submit -> start (the job's ``started_at - created_at``) of one job on an idle queue, 3 times;
3. ``--jobs`` small jobs submitted at once: jobs per minute from the first submit to the
   last job's end, and each job's submit -> start;
4. ``GET /jobs/{id}``, with idle workers and then while both workers train: first the
   capacity (``--clients`` clients, each waiting for its answer, for half of
   ``--rate-seconds``), then each of ``--rates`` requests/s for ``--rate-seconds``, open
   loop (each request sent at its scheduled time however slow the answers; latency counts
   from that time); with how many database connections the API opened meanwhile and how
   many jobs were running (sampled from the database every 0.5 s).

Prints measured numbers only. (Not named queue.py: with ``bench/`` on ``sys.path``, as
``bench/dpgan.py`` runs, that would shadow the standard library's ``queue``.)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import psycopg

from bench.service import make_csv, peak_rss_mb, stream_upload
from tests.integration.helpers import csv_bytes
from tests.integration.processes import Process, Server, cli, wait_for
from tests.integration.servers import PostgresServer, RedisServer

ROOT = Path(__file__).resolve().parents[1]
FINAL = ("succeeded", "failed", "cancelled")
SMALL_ROWS = 500
# A small job: the engine's defaults, a small epsilon, a small first release. The explicit
# delta keeps hundreds of jobs inside the dataset's total delta.
SMALL_JOB = {"epsilon": 0.5, "delta": 1e-6, "rows": 100}


def env_for(data_dir: Path, database_url: str, broker_url: str, upload_bytes: int) -> dict[str, str]:
    """The service's environment: defaults except the servers, the key and the upload limit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPSYNTH_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        DPSYNTH_DATA_DIR=str(data_dir),
        DPSYNTH_ENCRYPTION_KEY=base64.b64encode(os.urandom(32)).decode(),
        DPSYNTH_DATABASE_URL=database_url,
        DPSYNTH_BROKER_URL=broker_url,
        DPSYNTH_MAX_UPLOAD_BYTES=str(max(2 << 30, upload_bytes + (64 << 20))),
    )
    return env


def seconds_between(start: str, end: str) -> float:
    """Seconds from one ISO timestamp of the API to another."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def spread(values: list[float]) -> str:
    """Min, p50, p95 and max of ``values`` (seconds)."""
    low, p50, p95, high = np.percentile(values, [0, 50, 95, 100])
    return f"min {low:.2f} s, p50 {p50:.2f} s, p95 {p95:.2f} s, max {high:.2f} s"


def submit(client: httpx.Client, dataset_id: str) -> str:
    """POST /jobs of a small job; returns the job id."""
    response = client.post("/jobs", json={"dataset_id": dataset_id, **SMALL_JOB})
    response.raise_for_status()
    return response.json()["id"]


def wait_final(client: httpx.Client, dataset_id: str, ids: list[str], timeout: float) -> list[dict]:
    """Poll the dataset's job list once a second until every job in ``ids`` is final."""

    def done() -> list[dict] | None:
        jobs = {j["id"]: j for j in client.get("/jobs", params={"dataset_id": dataset_id}).json()}
        return [jobs[i] for i in ids] if all(jobs[i]["state"] in FINAL for i in ids) else None

    return wait_for(done, timeout=timeout, what=f"{len(ids)} jobs to end", every=1.0)


def upload(client: httpx.Client, server: Server, tmp: Path, megabytes: int) -> None:
    """Stream a generated CSV of ``megabytes`` MB to POST /datasets; print throughput and memory."""
    free = shutil.disk_usage(tmp).free
    if free < 3 * megabytes * 1_000_000:  # the CSV, its encrypted copy in storage, and room
        raise SystemExit(f"{tmp} has {free / 1e9:.1f} GB free; the upload needs {3 * megabytes / 1e3:.1f} GB")
    csv = tmp / "big.csv"
    rows = make_csv(csv, megabytes)
    size = csv.stat().st_size
    before = peak_rss_mb(server.popen.pid)

    response, seconds = stream_upload(client, csv)
    csv.unlink()
    response.raise_for_status()
    after = peak_rss_mb(server.popen.pid)
    print(
        f"upload of a {size / 1e6:,.0f} MB CSV ({rows:,} rows, 6 columns), streamed: HTTP "
        f"{response.status_code} in {seconds:.1f} s, {size / 1e6 / seconds:.1f} MB/s"
    )
    print(
        f"API process peak RSS (VmHWM): {before:.0f} MB before -> {after:.0f} MB after the upload "
        f"(+{after - before:.0f} MB)"
    )


def idle_latency(client: httpx.Client, dataset_id: str, repeats: int = 3) -> None:
    """Submit one job at a time on an idle queue; print each submit -> start."""
    delays = []
    for _ in range(repeats):
        job = wait_final(client, dataset_id, [submit(client, dataset_id)], timeout=600)[0]
        if job["state"] != "succeeded":
            print(f"idle job {job['id']} ended {job['state']}: {job['error']}")
        delays.append(seconds_between(job["created_at"], job["started_at"]))
        time.sleep(1)  # both workers back to waiting on the broker
    print(
        f"submit -> start, one job on an idle queue, {repeats} times: "
        + ", ".join(f"{d:.3f}" for d in delays)
        + " s"
    )


def throughput(client: httpx.Client, dataset_id: str, n: int) -> float:
    """Submit ``n`` small jobs at once; print jobs/min and submit -> start. Returns a job's mean run."""
    start = time.perf_counter()
    ids = [submit(client, dataset_id) for _ in range(n)]
    submitted = time.perf_counter() - start
    jobs = wait_final(client, dataset_id, ids, timeout=120 * n)
    states = Counter(j["state"] for j in jobs)
    first = min(j["created_at"] for j in jobs)
    last = max(j["finished_at"] for j in jobs)
    span = seconds_between(first, last)
    runs = [seconds_between(j["started_at"], j["finished_at"]) for j in jobs]
    waits = [seconds_between(j["created_at"], j["started_at"]) for j in jobs]
    print(
        f"{n} small jobs ({SMALL_ROWS}-row table, 6 columns, epsilon {SMALL_JOB['epsilon']}, "
        f"{SMALL_JOB['rows']} rows out, engine defaults) submitted in {submitted:.2f} s; "
        + ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    )
    print(f"first submit -> last job ended: {span:.1f} s = {n / span * 60:.1f} jobs/min with 2 workers")
    print(f"one job's run (start -> end): {spread(runs)}")
    print(f"submit -> start under that queue: {spread(waits)}")
    for job in jobs:
        if job["state"] != "succeeded":
            print(f"  job {job['id']} {job['state']}: {job['error']}")
    return statistics.mean(runs)


class Database:
    """One connection to the service's PostgreSQL database, read without going through the API."""

    def __init__(self, dsn: str) -> None:
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._lock = threading.Lock()

    def _one(self, query: str) -> int:
        with self._lock:
            row = self._conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    def running(self) -> int:
        """Jobs in state running."""
        return self._one("SELECT count(*) FROM jobs WHERE state = 'running'")

    def sessions(self) -> int:
        """Connections ever opened to this database (PostgreSQL 14+ counts them)."""
        return self._one("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


async def _requests(
    url: str, token: str, ids: list[str], *, rate: float, clients: int, seconds: float
) -> dict:
    """GET /jobs/{id} for ``seconds``: open loop at ``rate``/s, or (rate 0) closed loop with ``clients``.

    Open loop sends each request at its scheduled time however slow the answers are, and
    counts latency from that time; closed loop has each client wait for its answer.
    """
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": token}, timeout=60, limits=limits
    ) as client:

        async def one(i: int, due: float) -> None:
            try:
                response = await client.get(f"/jobs/{ids[i % len(ids)]}")
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                return
            if response.status_code != 200:
                errors[f"HTTP {response.status_code}"] += 1
                return
            latencies.append(time.perf_counter() - due)

        await asyncio.gather(*(one(i, time.perf_counter()) for i in range(max(clients, 5))))  # warm up
        latencies.clear()
        errors.clear()
        lag, sent = 0.0, 0
        start = time.perf_counter() + 0.1
        if rate > 0:
            tasks = []
            for sent in range(1, int(rate * seconds) + 1):
                due = start + (sent - 1) / rate
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                lag = max(lag, time.perf_counter() - due)
                tasks.append(asyncio.create_task(one(sent, due)))
            sending = time.perf_counter() - start
            await asyncio.gather(*tasks)
        else:
            await asyncio.sleep(max(0.0, start - time.perf_counter()))

            async def loop(offset: int) -> None:
                nonlocal sent
                while time.perf_counter() - start < seconds:
                    sent += 1
                    await one(offset + sent, time.perf_counter())

            await asyncio.gather(*(loop(c) for c in range(clients)))
            sending = time.perf_counter() - start
    return {
        "sent": sent,
        "sending": sending,
        "finished": time.perf_counter() - start,
        "lag": lag,
        "lat": np.array(latencies) * 1000,
        "errors": errors,
    }


def pool_timeouts(server: Server) -> int:
    """SQLAlchemy pool timeouts (each a 500) in the API's log so far."""
    return server.log.read_text(errors="replace").count("QueuePool limit")


def recovery(url: str, token: str, job_id: str) -> float:
    """Seconds until GET /jobs/{id} answers 200 within 1 s again (polled every second)."""
    start = time.perf_counter()
    with httpx.Client(base_url=url, headers={"X-API-Key": token}, timeout=300) as client:
        while True:
            sent = time.perf_counter()
            try:
                if client.get(f"/jobs/{job_id}").status_code == 200 and time.perf_counter() - sent < 1:
                    return sent - start
            except httpx.HTTPError:
                pass
            time.sleep(1)


def measure_api(
    server: Server, token: str, ids: list[str], db: Database, args: argparse.Namespace, label: str
) -> None:
    """GET /jobs/{id}: closed-loop capacity, then each open-loop rate; with the jobs running meanwhile."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            samples.append(db.running())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for rate, clients, seconds in (
            (0, args.clients, args.rate_seconds / 2),
            *((rate, 0, args.rate_seconds) for rate in sorted(args.rates)),
        ):
            opened, sampled, pool = db.sessions(), len(samples), pool_timeouts(server)
            out = asyncio.run(_requests(server.url, token, ids, rate=rate, clients=clients, seconds=seconds))
            back = recovery(server.url, token, ids[0])
            opened, running = db.sessions() - opened, samples[sampled:] or [db.running()]
            lat = out["lat"]
            p50, p95, p99 = np.percentile(lat, [50, 95, 99]) if len(lat) else (math.nan,) * 3
            errors = ", ".join(f"{v} {k}" for k, v in out["errors"].items()) or "none"
            how = (
                f"open loop at {rate:g}/s: {out['sent']} sent in {out['sending']:.1f} s "
                f"({out['sent'] / out['sending']:.1f}/s, client at most {out['lag'] * 1000:.0f} ms late), "
                f"last answer at {out['finished']:.1f} s"
                if rate
                else f"closed loop, {clients} clients for {seconds:g} s: "
                f"{len(lat) / out['sending']:.1f} answers/s"
            )
            print(
                f"GET /jobs/{{id}} {label}, {how}; {len(lat)} answered 200, latency p50 {p50:.0f} ms, "
                f"p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {np.max(lat, initial=0):.0f} ms; errors: {errors}; "
                f"{opened} new database connections; jobs running {min(running)}-{max(running)}"
            )
            if back >= 1 or pool_timeouts(server) > pool:
                print(
                    f"  the API logged {pool_timeouts(server) - pool} database pool timeouts (HTTP 500) and "
                    f"answered within 1 s again {back:.0f} s after that run ended"
                )
    finally:
        stop.set()
        sampler.join()


def load_while_training(
    server: Server,
    client: httpx.Client,
    token: str,
    db: Database,
    dataset_id: str,
    run_s: float,
    args: argparse.Namespace,
) -> None:
    """Keep both workers training (a queue of small jobs) while measuring the API; then cancel the rest."""
    # Enough for the whole measurement, an overloaded rate's backlog included; the rest is cancelled.
    window = args.rate_seconds * (0.5 + 4 * len(args.rates)) + 30
    n = 2 * math.ceil(window / max(run_s, 1.0)) + 2
    ids = [submit(client, dataset_id) for _ in range(n)]
    wait_for(lambda: db.running() == 2, timeout=120, what="both workers to train")
    measure_api(server, token, ids, db, args, f"while both workers train ({n} jobs queued)")
    for job_id in ids:
        client.post(f"/jobs/{job_id}/cancel")  # a job already final answers 409
    jobs = wait_final(client, dataset_id, ids, timeout=600)
    states = Counter(j["state"] for j in jobs)
    print("  those jobs: " + ", ".join(f"{c} {s}" for s, c in sorted(states.items())))


def main() -> None:
    """Start the topology, run the measurements, print them, and stop everything."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20, help="small jobs submitted at once")
    parser.add_argument("--rates", type=float, nargs="+", default=[25.0, 100.0], help="GET /jobs/{id} per s")
    parser.add_argument("--rate-seconds", type=float, default=20.0, help="seconds at each rate")
    parser.add_argument("--clients", type=int, default=8, help="clients of the closed-loop capacity run")
    parser.add_argument("--upload-mb", type=int, default=1000, help="size of the uploaded CSV; 0 skips it")
    args = parser.parse_args()
    # Clean up below on SIGTERM, and on Ctrl-C even when started in the background (SIGINT ignored).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dpsynth-bench-")))
        postgres = stack.enter_context(PostgresServer())
        redis_server = stack.enter_context(RedisServer())
        database = postgres.create_database("dpsynth")
        env = env_for(tmp / "data", postgres.url(database), redis_server.url, args.upload_mb * 1_000_000)
        cli(env, "admin", "create-tenant", "bench")
        token = cli(env, "admin", "create-key", "--tenant", "bench", "--role", "custodian").stdout.strip()
        server = Server(env, "--no-worker", log=tmp / "serve.log")
        stack.callback(server.stop)
        workers = []
        for i in (1, 2):
            worker = Process(env, "worker", log=tmp / f"worker{i}.log")
            stack.callback(worker.stop)
            stack.callback(worker.kill)  # first: a job in flight is thrown away, not waited for
            workers.append(worker)
        for worker in workers:
            wait_for(lambda w=worker: " ready." in w.log.read_text(), timeout=120, what="a worker")
        client = stack.enter_context(
            httpx.Client(base_url=server.url, headers={"X-API-Key": token}, timeout=60)
        )
        print(
            f"topology: PostgreSQL {postgres.bindir.parent.name} + Redis, dpsynth serve --no-worker, "
            f"2 dpsynth workers; {os.cpu_count()} CPU cores, load average {os.getloadavg()[1]:.1f} (5 min)"
        )
        if args.upload_mb > 0:
            upload(client, server, tmp, args.upload_mb)

        response = client.post(
            "/datasets", params={"name": "small", "format": "csv"}, content=csv_bytes(SMALL_ROWS)
        )
        response.raise_for_status()
        dataset_id = response.json()["id"]
        client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": 1e4, "delta": 1e-3}).raise_for_status()

        idle_latency(client, dataset_id)
        run_s = throughput(client, dataset_id, args.jobs)
        ids = [j["id"] for j in client.get("/jobs", params={"dataset_id": dataset_id}).json()]
        db = Database(postgres.dsn(database))
        stack.callback(db.close)
        measure_api(server, token, ids, db, args, "with idle workers")
        load_while_training(server, client, token, db, dataset_id, run_s, args)
        peaks = ", ".join(f"{peak_rss_mb(w.popen.pid):.0f}" for w in workers)
        print(f"peak RSS (VmHWM): API {peak_rss_mb(server.popen.pid):.0f} MB, workers {peaks} MB")
        print(f"load average at the end: {os.getloadavg()[1]:.1f} (5 min), {os.getloadavg()[2]:.1f} (15 min)")


if __name__ == "__main__":
    main()
