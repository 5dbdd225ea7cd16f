"""``dpsynth upload|jobs|releases|audit export``: client commands against a running server."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from service.client import Client, ClientError


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, args.key)


def upload(args: argparse.Namespace) -> int:
    """Upload a table with a progress bar; prints the dataset and its inferred schema."""
    path = Path(args.file)
    if not path.is_file():
        raise FileNotFoundError(f"{args.file!r} does not exist")
    with (
        _client(args) as client,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            desc="uploading",
            file=sys.stderr,
            disable=args.quiet,
        ) as bar,
    ):
        dataset = client.upload(path, name=args.name, on_bytes=bar.update)
    print(
        f"dataset {dataset['id']}: {dataset['row_count']} rows, {len(dataset['schema']['columns'])} columns"
    )
    for name, spec in dataset["schema"]["columns"].items():
        print(f"  {name}: {spec['kind']}")
    if args.epsilon is not None:
        with _client(args) as client:
            budget = client.request(
                "PUT",
                f"/datasets/{dataset['id']}/budget",
                json={"epsilon": args.epsilon, "delta": args.delta},
            )
        print(f"budget set: epsilon {budget['epsilon_total']:g}, delta {budget['delta_total']:g}")
    return 0


def datasets_list(args: argparse.Namespace) -> int:
    """List the tenant's datasets."""
    with _client(args) as client:
        for dataset in client.request("GET", "/datasets"):
            erased = " (raw erased)" if dataset["raw_deleted_at"] else ""
            print(f"{dataset['id']}  {dataset['name']}  epsilon budget {dataset['epsilon_budget']}{erased}")
    return 0


def datasets_schema(args: argparse.Namespace) -> int:
    """Print a dataset's schema, or replace it with a JSON schema file (--set)."""
    with _client(args) as client:
        if args.set:
            body = json.loads(Path(args.set).read_text(encoding="utf-8"))
            schema = client.request("PUT", f"/datasets/{args.dataset}/schema", json=body)
        else:
            schema = client.request("GET", f"/datasets/{args.dataset}/schema")
    print(json.dumps(schema, indent=2))
    return 0


def datasets_budget(args: argparse.Namespace) -> int:
    """Set a dataset's total budget, or show it and its ledger."""
    with _client(args) as client:
        if args.epsilon is not None:
            client.request(
                "PUT", f"/datasets/{args.dataset}/budget", json={"epsilon": args.epsilon, "delta": args.delta}
            )
        ledger = client.request("GET", f"/datasets/{args.dataset}/ledger")
    b = ledger["budget"]
    print(
        f"budget epsilon {b['epsilon_total']}, delta {b['delta_total']}; charged {b['epsilon_charged']:.4g}, "
        f"reserved {b['epsilon_reserved']:.4g}, remaining {b['epsilon_remaining']:.4g}"
    )
    for line in ledger["lines"]:
        charged = "-" if line["epsilon_charged"] is None else f"{line['epsilon_charged']:.4g}"
        print(
            f"  job {line['job_id']}  {line['state']}  "
            f"reserved {line['epsilon_reserved']:.4g}  charged {charged}"
        )
    return 0


def datasets_retention(args: argparse.Namespace) -> int:
    """Set how long the raw upload is kept (``--days N``, or ``--keep`` until erased on request)."""
    with _client(args) as client:
        dataset = client.request(
            "PUT", f"/datasets/{args.dataset}/retention", json={"days": None if args.keep else args.days}
        )
    expires = dataset["raw_expires_at"]
    print(
        f"dataset {dataset['id']}: raw data "
        + (f"erased after {expires}" if expires else "kept until erased")
    )
    return 0


def datasets_delete_raw(args: argparse.Namespace) -> int:
    """Erase a dataset's raw upload (releases and the ledger stay)."""
    with _client(args) as client:
        client.request("DELETE", f"/datasets/{args.dataset}/raw")
    print(f"raw data of {args.dataset} erased")
    return 0


def datasets_statement(args: argparse.Namespace) -> int:
    """Download a dataset's budget statement (PDF, or HTML for a .html file or --format html)."""
    out = Path(args.output)
    file_format = args.format or ("html" if out.suffix.lower() in (".html", ".htm") else "pdf")
    with _client(args) as client:
        size = client.download(f"/datasets/{args.dataset}/statement", out, params={"format": file_format})
    print(f"wrote {out} ({size:,} bytes)")
    return 0


def jobs_submit(args: argparse.Namespace) -> int:
    """Submit a job; with --wait, follow it to the end like ``jobs status --follow``."""
    body = {"dataset_id": args.dataset, "epsilon": args.epsilon, "delta": args.delta, "rows": args.rows}
    if args.seed is not None:
        body["seed"] = args.seed
    body["device"] = args.device
    with _client(args) as client:
        job = client.request("POST", "/jobs", json=body)
    print(
        f"job {job['id']} queued on {job['queue']} workers "
        f"(reserved epsilon {job['epsilon']:g}, delta {job['delta']:g})"
    )
    if args.wait:
        return _follow(args, job["id"])
    return 0


def _follow(args: argparse.Namespace, job_id: str) -> int:
    with (
        _client(args) as client,
        tqdm(total=100, desc="queued", unit="%", file=sys.stderr, disable=args.quiet) as bar,
    ):
        while True:
            job = client.request("GET", f"/jobs/{job_id}")
            bar.set_description(job["phase"])
            bar.set_postfix(epsilon=f"{job['epsilon_spent']:.3f}", epoch=f"{job['epoch']:.2f}")
            bar.update(max(round(job["progress"] * 100) - bar.n, 0))
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(args.interval)
    _print_job(job)
    return 0 if job["state"] == "succeeded" else 1


def _print_job(job: dict) -> None:
    charged = "" if job["epsilon_charged"] is None else f", charged epsilon {job['epsilon_charged']:.4g}"
    print(f"job {job['id']}: {job['state']} ({job['progress']:.0%}, {job['phase']}){charged}")
    if job.get("worker"):
        print(f"ran on {job['worker']} ({job['device']}), attempt {job['attempts']}")
    if job.get("release_id"):
        print(f"release {job['release_id']}")
    if job.get("error"):
        print(f"error: {job['error']}")


def jobs_status(args: argparse.Namespace) -> int:
    """Show a job, or follow it with a progress bar until it ends."""
    if args.follow:
        return _follow(args, args.job)
    with _client(args) as client:
        _print_job(client.request("GET", f"/jobs/{args.job}"))
    return 0


def jobs_cancel(args: argparse.Namespace) -> int:
    """Ask a job to stop; a running job is charged what it spent."""
    with _client(args) as client:
        _print_job(client.request("POST", f"/jobs/{args.job}/cancel"))
    return 0


def releases_create(args: argparse.Namespace) -> int:
    """Draw another table from a succeeded job's model (no budget); --wait until it is ready."""
    with _client(args) as client:
        release = client.request("POST", f"/jobs/{args.job}/releases", json={"rows": args.rows})
        while args.wait and release["state"] == "pending":
            time.sleep(args.interval)
            release = client.request("GET", f"/releases/{release['id']}")
    print(f"release {release['id']}: {release['state']}, {release['rows']} rows")
    return 0 if release["state"] != "failed" else 1


def releases_download(args: argparse.Namespace) -> int:
    """Download a release's table (and optionally its certificate)."""
    out = Path(args.output)
    file_format = args.format or ("parquet" if out.suffix.lower() in (".parquet", ".pq") else "csv")
    with (
        _client(args) as client,
        tqdm(unit="B", unit_scale=True, desc="downloading", file=sys.stderr, disable=args.quiet) as bar,
    ):
        size = client.download(
            f"/releases/{args.release}/download", out, params={"format": file_format}, on_bytes=bar.update
        )
        if args.certificate:
            cert = client.request("GET", f"/releases/{args.release}/certificate")
            Path(args.certificate).write_text(json.dumps(cert, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} ({size:,} bytes)")
    return 0


def releases_reproduce(args: argparse.Namespace) -> int:
    """Re-derive a release from its model and certificate, without raw data; exit 1 on a mismatch.

    Re-draws the table from the stored generator with the recorded seed and rows and
    compares its SHA-256, checks the model file's SHA-256, and re-computes epsilon from
    the certificate's accountant history.
    """
    from models.reproduce import check_release

    out = Path(args.output) if args.output else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = out or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model = folder / f"model-{args.release}.safetensors"
        with _client(args) as client:
            certificate = client.request("GET", f"/releases/{args.release}/certificate")
            client.download(f"/releases/{args.release}/model", model)
        (folder / f"certificate-{args.release}.json").write_text(json.dumps(certificate, indent=2) + "\n")
        problems = check_release(certificate, model)
    record = certificate.get("service", {}).get("reproduce", {})
    if problems:
        print(f"release {args.release} does NOT reproduce:")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print(
        f"release {args.release} reproduces: {record.get('rows')} rows re-drawn with seed "
        f"{record.get('sample_seed')} match SHA-256 {record.get('table_sha256', '')[:16]}..., and the "
        f"accountant history gives the claimed epsilon {certificate['epsilon']:.6g}"
    )
    if out:
        print(f"model and certificate kept in {out}")
    return 0


def audit_export(args: argparse.Namespace) -> int:
    """Download the tenant's audit log or a signed evidence bundle (auditor key).

    The output's suffix decides: ``.zip`` is an evidence bundle (optionally of one dataset
    and a time range), ``.csv`` or ``.jsonl`` the plain log. Check either with
    ``dpsynth audit verify``.
    """
    out = Path(args.output)
    suffix = out.suffix.lower()
    scoped = {"dataset_id": args.dataset, "since": args.since, "until": args.until}
    params = {name: value for name, value in scoped.items() if value is not None}
    if suffix != ".zip" and params:
        raise ValueError("--dataset, --since and --until make an evidence bundle: write it to a .zip file")
    with _client(args) as client:
        if suffix == ".zip":
            client.download("/audit/bundles", out, params=params)
            print(f"wrote {out}; check it with: dpsynth audit verify {out} --public-key SERVICE_KEY.pem")
        else:
            client.download("/audit/export", out, params={"format": "csv" if suffix == ".csv" else "jsonl"})
            print(f"wrote {out}")
    return 0


__all__ = ["ClientError"]
