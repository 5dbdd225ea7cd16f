"""The ``dpsynth`` command.

Bad input ends with one ``dpsynth: error: ...`` line and exit status 2, never a
traceback (``--debug`` shows one for bug reports).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from models.errors import DPSynthError
from service.tables import TableFormatError

# Errors caused by the input: one line and exit 2. Anything else is a bug and shows a traceback.
USER_ERRORS = (DPSynthError, TableFormatError, FileNotFoundError, KeyError, ValueError)


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dpsynth``; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors and --help
        return int(exc.code or 0)
    warnings.showwarning = _one_line_warning
    try:
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
