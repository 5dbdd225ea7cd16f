"""The ``dpsynth`` command.

Bad input ends with one ``dpsynth: error: ...`` line and exit status 2, never a
traceback (``--debug`` shows one for bug reports).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from models.errors import DPSynthError
from service.client import ClientError
from service.core.errors import ServiceError
from service.tables import TableFormatError

# Errors caused by the input: one line and exit 2. Anything else is a bug and shows a traceback.
USER_ERRORS = (
    DPSynthError,
    TableFormatError,
    ServiceError,
    ClientError,
    FileNotFoundError,
    KeyError,
    ValueError,
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _limit(text: str) -> int | str:
    return text if text == "default" else _positive_int(text)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"dpsynth: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = _Parser(prog="dpsynth", description="Differentially private synthetic tables.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    syn = sub.add_parser("synthesize", help="fit a DP synthesizer on a table and write synthetic rows")
    syn.add_argument("input", help="CSV or Parquet file")
    syn.add_argument("--epsilon", type=_positive_float, required=True, help="total privacy budget (> 0)")
    syn.add_argument(
        "--delta", type=_positive_float, default=None, help="default: a power of ten <= 1/(10 n)"
    )
    syn.add_argument("--schema", default=None, help="JSON schema declaring kinds and public domains")
    syn.add_argument("--target", default=None, help="public target column (budget favours its pairs)")
    syn.add_argument("--rows", type=_positive_int, required=True, help="synthetic rows to write")
    syn.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    syn.add_argument("--certificate", default=None, help="write the privacy certificate JSON here")
    syn.add_argument("--model", default=None, help="save the fitted model here")
    syn.add_argument("--seed", type=int, default=None, help="seed for everything except privacy noise")
    syn.add_argument("--accountant", choices=["prv", "rdp"], default="prv")
    syn.add_argument(
        "--discriminator-share", type=float, default=None, help="budget share of the DP-GAN phase"
    )
    syn.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    syn.add_argument(
        "--generator-steps", type=_positive_int, default=None, help="advanced: generator fit steps"
    )
    syn.add_argument("--quiet", action="store_true", help="no progress bar")

    ev = sub.add_parser("evaluate", help="quality report of a synthetic table")
    ev.add_argument("--train", required=True)
    ev.add_argument("--holdout", required=True)
    ev.add_argument("--synthetic", required=True)
    ev.add_argument("--target", default=None)
    ev.add_argument("--json", default=None, help="also write the report as JSON here")

    demo = sub.add_parser("demo", help="synthesize a real public table end to end and report")
    demo.add_argument("--epsilon", type=_positive_float, default=1.0)
    demo.add_argument("--out", default="dpsynth-demo", help="folder for the demo's files")
    demo.add_argument("--seed", type=int, default=0)
    _add_service_commands(sub)
    return parser


def _handler(parser: argparse.ArgumentParser, target: str) -> argparse.ArgumentParser:
    parser.set_defaults(handler=target)
    return parser


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=None, help="server URL (default: $DPSYNTH_URL or http://127.0.0.1:8000)"
    )
    parser.add_argument("--key", default=None, help="API key (default: $DPSYNTH_API_KEY)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_service_commands(sub: Any) -> None:
    """The service: serve, worker, migrate, admin, and the client commands."""
    server = "service.server_commands"
    client = "service.client_commands"
    serve = _handler(sub.add_parser("serve", help="run the API and an embedded worker"), f"{server}:serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive_int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="API only; run workers with dpsynth worker")
    _handler(sub.add_parser("worker", help="run a training worker"), f"{server}:worker")
    _handler(sub.add_parser("migrate", help="bring the database to the newest schema"), f"{server}:migrate")
    _handler(sub.add_parser("health", help="exit 0 when the database and broker answer"), f"{server}:health")

    admin = sub.add_parser("admin", help="bootstrap tenants, users and API keys").add_subparsers(
        dest="action", required=True
    )
    tenant = _handler(
        admin.add_parser("create-tenant", help="create a tenant"), f"{server}:admin_create_tenant"
    )
    tenant.add_argument("name")
    key = _handler(admin.add_parser("create-key", help="create an API key"), f"{server}:admin_create_key")
    key.add_argument("--tenant", required=True, help="tenant name or id")
    key.add_argument("--role", required=True, choices=["custodian", "analyst", "auditor", "admin"])
    key.add_argument("--name", default=None, help="a label for the key")
    user = _handler(
        admin.add_parser("create-user", help="create a web user (name and password)"),
        f"{server}:admin_create_user",
    )
    user.add_argument("--tenant", required=True, help="tenant name or id")
    user.add_argument("--role", required=True, choices=["custodian", "analyst", "auditor", "admin"])
    user.add_argument("--name", required=True, help="the name the user logs in with")
    user.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )
    user.add_argument(
        "--generate-password", action="store_true", help="generate a password and print it once"
    )
    _handler(
        admin.add_parser(
            "new-key",
            help="print a new DPSYNTH_ENCRYPTION_KEY, DPSYNTH_SIGNING_KEY or DPSYNTH_SESSION_SECRET",
        ),
        f"{server}:admin_new_key",
    )
    public_key = _handler(
        admin.add_parser("public-key", help="print the public key that signs audit bundles (to publish it)"),
        "service.audit_commands:admin_public_key",
    )
    public_key.add_argument("-o", "--output", default=None, help="write the PEM here instead of stdout")
    _handler(
        admin.add_parser("bootstrap", help="first run: tenant 'default', a key and a user per role"),
        f"{server}:admin_bootstrap",
    )
    set_tenant = _handler(
        admin.add_parser("set-tenant", help="a tenant's queue priority and running-jobs limit"),
        "service.fleet_commands:admin_set_tenant",
    )
    set_tenant.add_argument("tenant", help="tenant name or id")
    set_tenant.add_argument("--priority", type=int, default=None, help="higher runs first (default 0)")
    set_tenant.add_argument(
        "--max-running-jobs", type=_limit, default=None, help="a number, or 'default' for the service setting"
    )
    _handler(
        admin.add_parser("workers", help="workers, their devices and queues, alive or not"),
        "service.fleet_commands:admin_workers",
    )

    upload = _handler(sub.add_parser("upload", help="upload a CSV or Parquet table"), f"{client}:upload")
    upload.add_argument("file")
    upload.add_argument("--name", default=None, help="display name (default: the file name)")
    upload.add_argument("--epsilon", type=_positive_float, default=None, help="also set the total budget")
    upload.add_argument(
        "--delta", type=_positive_float, default=None, help="total delta (default: power of ten <= 1/(10 n))"
    )
    _add_client_options(upload)

    datasets = sub.add_parser("datasets", help="list datasets, review schemas, set budgets").add_subparsers(
        dest="action", required=True
    )
    ds_list = _handler(datasets.add_parser("list", help="list datasets"), f"{client}:datasets_list")
    ds_schema = _handler(
        datasets.add_parser("schema", help="show or set a schema"), f"{client}:datasets_schema"
    )
    ds_schema.add_argument("dataset")
    ds_schema.add_argument("--set", default=None, help="JSON schema file: kinds, public domains, target")
    ds_budget = _handler(
        datasets.add_parser("budget", help="show or set the budget"), f"{client}:datasets_budget"
    )
    ds_budget.add_argument("dataset")
    ds_budget.add_argument("--epsilon", type=_positive_float, default=None, help="set the total epsilon")
    ds_budget.add_argument("--delta", type=_positive_float, default=None, help="total delta (with --epsilon)")
    ds_erase = _handler(
        datasets.add_parser("delete-raw", help="erase the raw upload"), f"{client}:datasets_delete_raw"
    )
    ds_erase.add_argument("dataset")
    ds_keep = _handler(
        datasets.add_parser("retention", help="how long the raw upload is kept"),
        f"{client}:datasets_retention",
    )
    ds_keep.add_argument("dataset")
    period = ds_keep.add_mutually_exclusive_group(required=True)
    period.add_argument("--days", type=_non_negative_float, help="erase it this many days after the upload")
    period.add_argument("--keep", action="store_true", help="keep it until erased on request")
    ds_statement = _handler(
        datasets.add_parser("statement", help="download the budget statement (custodian or auditor key)"),
        f"{client}:datasets_statement",
    )
    ds_statement.add_argument("dataset")
    ds_statement.add_argument("-o", "--output", required=True, help="output .pdf or .html")
    ds_statement.add_argument("--format", choices=["pdf", "html"], default=None, help="default: from -o")
    for parser in (ds_list, ds_schema, ds_budget, ds_erase, ds_keep, ds_statement):
        _add_client_options(parser)

    jobs = sub.add_parser("jobs", help="submit, follow and cancel training jobs").add_subparsers(
        dest="action", required=True
    )
    submit = _handler(jobs.add_parser("submit", help="submit a job"), f"{client}:jobs_submit")
    submit.add_argument("--dataset", required=True)
    submit.add_argument("--epsilon", type=_positive_float, required=True)
    submit.add_argument("--delta", type=_positive_float, default=None)
    submit.add_argument("--rows", type=_positive_int, required=True)
    submit.add_argument("--seed", type=int, default=None)
    submit.add_argument(
        "--device", choices=["auto", "cpu", "gpu"], default="auto", help="auto: large tables on GPU workers"
    )
    submit.add_argument("--wait", action="store_true", help="follow the job to its end")
    submit.add_argument("--interval", type=_positive_float, default=1.0, help="seconds between polls")
    status = _handler(jobs.add_parser("status", help="show or follow a job"), f"{client}:jobs_status")
    status.add_argument("job")
    status.add_argument("--follow", action="store_true", help="progress bar until the job ends")
    status.add_argument("--interval", type=_positive_float, default=1.0)
    cancel = _handler(jobs.add_parser("cancel", help="cancel a job"), f"{client}:jobs_cancel")
    cancel.add_argument("job")
    for parser in (submit, status, cancel):
        _add_client_options(parser)

    batch = sub.add_parser("batch", help="many jobs from one YAML manifest").add_subparsers(
        dest="action", required=True
    )
    b_submit = _handler(
        batch.add_parser("submit", help="submit a manifest: all its jobs or none"),
        "service.batch_commands:submit",
    )
    b_submit.add_argument("manifest", help="YAML: jobs with dataset or file, epsilon, rows, ...")
    b_submit.add_argument("--wait", action="store_true", help="follow every job to its end")
    b_status = _handler(
        batch.add_parser("status", help="show or follow a batch"), "service.batch_commands:status"
    )
    b_status.add_argument("batch")
    b_status.add_argument("--follow", action="store_true", help="a progress bar per job until all end")
    for parser in (b_submit, b_status):
        parser.add_argument("--interval", type=_positive_float, default=1.0)
        _add_client_options(parser)

    releases = sub.add_parser("releases", help="draw and download releases").add_subparsers(
        dest="action", required=True
    )
    create = _handler(
        releases.add_parser("create", help="draw another table from a job's model (no budget)"),
        f"{client}:releases_create",
    )
    create.add_argument("job")
    create.add_argument("--rows", type=_positive_int, required=True)
    create.add_argument("--wait", action="store_true", help="wait until the table is written")
    create.add_argument("--interval", type=_positive_float, default=1.0)
    _add_client_options(create)
    download = _handler(
        releases.add_parser("download", help="download a release"), f"{client}:releases_download"
    )
    download.add_argument("release")
    download.add_argument("-o", "--output", required=True, help="output .csv or .parquet")
    download.add_argument("--format", choices=["csv", "parquet"], default=None)
    download.add_argument("--certificate", default=None, help="also write the certificate JSON here")
    _add_client_options(download)
    reproduce = _handler(
        releases.add_parser("reproduce", help="re-derive a release from its model; re-compute epsilon"),
        f"{client}:releases_reproduce",
    )
    reproduce.add_argument("release")
    reproduce.add_argument(
        "-o", "--output", default=None, help="keep the model and certificate in this folder"
    )
    _add_client_options(reproduce)

    audit = sub.add_parser("audit", help="export and verify the audit log").add_subparsers(
        dest="action", required=True
    )
    verify = _handler(
        audit.add_parser("verify", help="verify an exported audit log or evidence bundle offline"),
        "service.audit_commands:audit_verify",
    )
    verify.add_argument("file", help="a .jsonl or .csv export, or a .zip evidence bundle")
    verify.add_argument(
        "--public-key",
        default=None,
        metavar="PEM_FILE",
        help="the service's public key from a trusted place; without it a re-signed bundle passes",
    )
    export = _handler(
        audit.add_parser("export", help="export the audit log or an evidence bundle (auditor key)"),
        f"{client}:audit_export",
    )
    export.add_argument(
        "-o", "--output", required=True, help=".zip: signed evidence bundle; .jsonl or .csv: the plain log"
    )
    export.add_argument("--dataset", default=None, help="bundle: one dataset (default: the whole tenant)")
    export.add_argument("--since", default=None, help="bundle: events from this time (ISO 8601, UTC)")
    export.add_argument("--until", default=None, help="bundle: events up to this time (ISO 8601, UTC)")
    _add_client_options(export)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dpsynth``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors and --help
        return int(exc.code or 0)
    warnings.showwarning = _one_line_warning
    try:
        handler = getattr(args, "handler", None)
        if handler is not None:
            module, _, name = handler.partition(":")
            return int(getattr(importlib.import_module(module), name)(args) or 0)
        from service import commands

        return int(getattr(commands, args.command.replace("-", "_"))(args) or 0)
    except USER_ERRORS as exc:
        if args.debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"dpsynth: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dpsynth: interrupted", file=sys.stderr)
        return 130


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    print(f"dpsynth: warning: {message}", file=sys.stderr)


def write_json(data: dict[str, Any], path: str | Path) -> None:
    """Pretty JSON to a file."""
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
