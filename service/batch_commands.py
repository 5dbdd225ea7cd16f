"""``dpsynth batch submit|status``: many jobs from one YAML manifest, admitted whole or not at all.

A manifest lists jobs; each names an uploaded ``dataset`` id, or a local ``file`` that is
uploaded first (once per file) with an optional ``schema`` file and the ``budget`` it gets::

    jobs:
      - dataset: 3f60f7c4ca6b433288a3e50b803cc448
        epsilon: 1.0
        rows: 10000
      - file: patients.csv
        schema: patients.schema.json
        budget: {epsilon: 3}
        epsilon: 0.5
        rows: 5000
        delta: 1.0e-7

Everything that can be checked here is checked before anything is uploaded (files exist,
keys are known, a new file's jobs fit the budget it declares); the server then admits
all the jobs in one transaction or refuses the whole manifest.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from service.client import Client, ClientError

JOB_KEYS = {"dataset", "file", "schema", "budget", "epsilon", "delta", "rows", "seed", "device"}
FINAL = ("succeeded", "failed", "cancelled")


class ManifestError(ValueError):
    """The manifest is not usable; nothing was uploaded or submitted."""


def load_manifest(path: Path) -> list[dict[str, Any]]:
    """The manifest's jobs, checked, with file paths resolved next to the manifest.

    Raises:
        ManifestError: every problem found, at once.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{str(path)!r} is not a readable YAML manifest: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("jobs"), list) or not raw["jobs"]:
        raise ManifestError('a manifest is a YAML mapping with a non-empty "jobs" list')
    problems: list[str] = []
    jobs = []
    budgets: dict[Path, float] = {}
    spends: dict[Path, float] = {}
    for index, job in enumerate(raw["jobs"], start=1):
        where = f"job {index}"
        if not isinstance(job, dict):
            problems.append(f"{where}: expected a mapping")
            continue
        if unknown := set(job) - JOB_KEYS:
            problems.append(f"{where}: unknown keys {sorted(unknown)}; allowed {sorted(JOB_KEYS)}")
        if ("dataset" in job) == ("file" in job):
            problems.append(f"{where}: give exactly one of dataset (an uploaded id) or file (to upload)")
        epsilon, rows = job.get("epsilon"), job.get("rows")
        if not isinstance(epsilon, int | float) or not math.isfinite(epsilon) or epsilon <= 0:
            problems.append(f"{where}: epsilon must be a number > 0, got {epsilon!r}")
        if not isinstance(rows, int) or rows <= 0:
            problems.append(f"{where}: rows must be an integer > 0, got {rows!r}")
        job = dict(job)
        for key in ("file", "schema"):
            if key in job:
                job[key] = (path.parent / str(job[key])).resolve()
                if not job[key].is_file():
                    problems.append(f"{where}: {key} {str(job[key])!r} does not exist")
        if "file" in job:
            budget = job.get("budget")
            if isinstance(budget, dict) and isinstance(budget.get("epsilon"), int | float):
                budgets.setdefault(job["file"], float(budget["epsilon"]))
            if isinstance(epsilon, int | float):
                spends[job["file"]] = spends.get(job["file"], 0.0) + float(epsilon)
        jobs.append(job)
    for file, spend in spends.items():
        if file not in budgets:
            problems.append(f"{file.name}: a file to upload needs a budget (budget: {{epsilon: ...}})")
        elif spend > budgets[file] + 1e-9:
            problems.append(
                f"{file.name}: its jobs need epsilon {spend:g} but its budget is {budgets[file]:g}"
            )
    if problems:
        raise ManifestError("; ".join(problems) + "; nothing was uploaded or submitted")
    return jobs


def _upload_files(client: Client, jobs: list[dict[str, Any]], *, quiet: bool) -> None:
    uploaded: dict[Path, str] = {}
    for job in jobs:
        file = job.get("file")
        if file is None:
            continue
        if file not in uploaded:
            with tqdm(total=file.stat().st_size, unit="B", unit_scale=True, desc=file.name, file=sys.stderr,
                      disable=quiet) as bar:  # fmt: skip
                dataset_id = client.upload(file, on_bytes=bar.update)["id"]
            if job.get("schema"):
                client.request(
                    "PUT", f"/datasets/{dataset_id}/schema", json=json.loads(job["schema"].read_text())
                )
            client.request("PUT", f"/datasets/{dataset_id}/budget", json=job["budget"])
            uploaded[file] = dataset_id
        job["dataset"] = uploaded[file]


def submit(args: argparse.Namespace) -> int:
    """Check the manifest, upload its files, submit all its jobs as one batch."""
    jobs = load_manifest(Path(args.manifest))
    with Client(args.url, args.key) as client:
        _upload_files(client, jobs, quiet=args.quiet)
        body = {
            "jobs": [
                {"dataset_id": j["dataset"], "epsilon": j["epsilon"], "rows": j["rows"]}
                | {k: j[k] for k in ("delta", "seed", "device") if k in j}
                for j in jobs
            ]
        }
        batch = client.request("POST", "/batches", json=body)
    print(f"batch {batch['id']}: {len(batch['jobs'])} jobs queued")
    if args.wait:
        return _follow(args, batch["id"])
    return 0


def _follow(args: argparse.Namespace, batch_id: str) -> int:
    with Client(args.url, args.key) as client:
        batch = client.request("GET", f"/batches/{batch_id}")
        bars = [
            tqdm(
                total=100,
                desc=f"job {job['id'][:8]}",
                unit="%",
                position=i,
                file=sys.stderr,
                disable=args.quiet,
            )
            for i, job in enumerate(batch["jobs"])
        ]
        try:
            while True:
                for bar, job in zip(bars, batch["jobs"], strict=True):
                    bar.set_postfix(state=job["state"], epsilon=f"{job['epsilon_spent']:.3f}")
                    bar.update(max(round(job["progress"] * 100) - bar.n, 0))
                if all(job["state"] in FINAL for job in batch["jobs"]):
                    break
                time.sleep(args.interval)
                batch = client.request("GET", f"/batches/{batch_id}")
        finally:
            for bar in bars:
                bar.close()
    for job in batch["jobs"]:
        release = f", release {job['release_id']}" if job.get("release_id") else ""
        print(f"job {job['id']}: {job['state']}{release}")
    return 0 if all(job["state"] == "succeeded" for job in batch["jobs"]) else 1


def status(args: argparse.Namespace) -> int:
    """Each job of a batch; with --follow, a progress bar per job until all end."""
    if args.follow:
        return _follow(args, args.batch)
    with Client(args.url, args.key) as client:
        batch = client.request("GET", f"/batches/{args.batch}")
    for job in batch["jobs"]:
        print(f"job {job['id']}: {job['state']} ({job['progress']:.0%}, {job['phase']})")
    return 0


__all__ = ["ClientError", "ManifestError"]
