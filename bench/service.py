"""Service numbers on this machine: upload throughput and the API's peak memory, job latency.

Usage: python bench/service.py [--upload-mb 500] [--jobs 5]

Starts ``dpsynth serve`` (API + embedded worker, embedded defaults in a temp dir), uploads a
generated CSV of about ``--upload-mb`` MB through ``dpsynth``'s HTTP client path (a raw
streamed body), and reads the API process's peak resident memory (VmHWM) before and after.
Then submits small jobs and measures submit -> running and submit -> first progress.
Prints measured numbers only.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd


def stream_upload(client: httpx.Client, csv: Path) -> tuple[httpx.Response, float]:
    """POST ``csv`` to /datasets as a streamed raw body (1 MiB chunks); the response and its seconds."""

    def body():  # type: ignore[no-untyped-def]
        with csv.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk

    start = time.perf_counter()
    response = client.post(
        "/datasets",
        params={"name": "big", "format": "csv"},
        content=body(),
        headers={"Content-Length": str(csv.stat().st_size)},
        timeout=None,
    )
    return response, time.perf_counter() - start


def make_csv(path: Path, megabytes: int) -> int:
    """Write a mixed CSV of about ``megabytes`` MB; returns its rows."""
    rng = np.random.default_rng(0)
    rows = 0
    with path.open("w") as fh:
        header = True
        while path.stat().st_size < megabytes * 1_000_000:
            n = 500_000
            chunk = pd.DataFrame(
                {
                    "age": rng.integers(18, 90, n),
                    "income": rng.lognormal(10, 0.5, n).round(2),
                    "region": rng.choice(["north", "south", "east", "west"], n),
                    "smoker": rng.choice(["yes", "no"], n),
                    "visits": rng.poisson(3, n),
                    "score": rng.normal(0, 1, n).round(5),
                }
            )
            chunk.to_csv(fh, index=False, header=header)
            fh.flush()
            header = False
            rows += n
    return rows


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> None:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--upload-mb", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DPSYNTH_")}
        env.update(
            DPSYNTH_DATA_DIR=str(tmp / "data"),
            DPSYNTH_ENCRYPTION_KEY=base64.b64encode(os.urandom(32)).decode(),
            DPSYNTH_MAX_UPLOAD_BYTES=str(4 << 30),
        )
        cli = [sys.executable, "-m", "service.cli"]
        keys = subprocess.run(
            [*cli, "admin", "bootstrap"], env=env, capture_output=True, text=True, check=True
        )
        custodian = next(line.split()[1] for line in keys.stdout.splitlines() if "custodian" in line)
        csv = tmp / "big.csv"
        rows = make_csv(csv, args.upload_mb)
        size = csv.stat().st_size
        server = subprocess.Popen(
            [*cli, "serve", "--port", "8765"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            client = httpx.Client(
                base_url="http://127.0.0.1:8765", headers={"X-API-Key": custodian}, timeout=None
            )
            for _ in range(300):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            before = peak_rss_mb(server.pid)

            response, seconds = stream_upload(client, csv)
            response.raise_for_status()
            after = peak_rss_mb(server.pid)
            print(
                f"upload {size / 1e6:,.0f} MB CSV ({rows:,} rows), streamed, encrypted, validated: "
                f"{seconds:.1f} s, {size / 1e6 / seconds:.1f} MB/s"
            )
            print(
                f"API process peak RSS: {before:.0f} MB idle -> {after:.0f} MB after the upload "
                f"(+{after - before:.0f} MB)"
            )

            small = pd.DataFrame({"a": np.arange(2000) % 7, "b": np.random.default_rng(1).normal(size=2000)})
            dataset = client.post(
                "/datasets",
                params={"name": "small", "format": "csv"},
                content=small.to_csv(index=False).encode(),
            ).json()["id"]
            client.put(f"/datasets/{dataset}/budget", json={"epsilon": 100.0})
            to_running, to_progress = [], []
            for _ in range(args.jobs):
                start = time.perf_counter()
                job = client.post("/jobs", json={"dataset_id": dataset, "epsilon": 0.5, "rows": 100}).json()[
                    "id"
                ]
                running = progress = None
                while True:
                    status = client.get(f"/jobs/{job}").json()
                    now = time.perf_counter() - start
                    if running is None and status["state"] != "queued":
                        running = now
                    if progress is None and (
                        status["progress"] > 0 or status["phase"] not in ("queued", "starting")
                    ):
                        progress = now
                    if status["state"] in ("succeeded", "failed", "cancelled"):
                        break
                    time.sleep(0.02)
                to_running.append(running)
                to_progress.append(progress)
            print(
                f"job latency over {args.jobs} jobs on the embedded default (SQLite broker, 0.5 s poll): "
                f"submit -> running median {statistics.median(to_running):.2f} s "
                f"(max {max(to_running):.2f}), submit -> first progress median "
                f"{statistics.median(to_progress):.2f} s (max {max(to_progress):.2f})"
            )
        finally:
            server.terminate()
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
