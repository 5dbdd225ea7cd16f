"""``dpsynth audit verify`` and ``dpsynth admin public-key``: evidence that is checked offline.

``audit verify`` reads a plain export (JSONL or CSV, ``audit_verify``) or a signed evidence
bundle (a zip, ``bundle_verify``); it needs neither the service nor its database.
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

from service.core.audit_verify import verify_file
from service.core.bundle_verify import BundleResult, verify_bundle
from service.core.config import get_settings
from service.core.errors import InvalidRequestError
from service.core.signing import Signer


def admin_public_key(args: argparse.Namespace) -> int:
    """Print (or write) the public key that signs audit bundles, to publish it out of band."""
    signer = Signer.from_settings(get_settings())
    if args.output:
        Path(args.output).write_bytes(signer.public_pem())
        print(f"wrote {args.output}: Ed25519 public key, fingerprint {signer.fingerprint}")
    else:
        sys.stdout.write(signer.public_pem().decode())
        sys.stdout.flush()
        print(f"fingerprint {signer.fingerprint}", file=sys.stderr)
    return 0


def _print_bundle(path: str, result: BundleResult) -> None:
    manifest = result.manifest
    if result.ok and manifest is not None:
        scope, service, events = manifest.scope, manifest.service, manifest.events
        what = f"tenant {scope.tenant_id}"
        if scope.dataset_id:
            what = f"dataset {scope.dataset_id} of {what}"
        span = f"events from {scope.since or 'the start'} to {scope.until or 'the export'}"
        print(f"OK: audit bundle of {what}, {span}")
        print(
            f"  exported {manifest.generated_at} by {manifest.generated_by} "
            f"(dpsynth {service.get('version')}, commit {service.get('code_commit')})"
        )
        signer = "the trusted key you gave" if result.trusted_key else "the key shipped in the bundle"
        print(f"  signature: valid, key {result.bundle_key} ({signer})")
        seqs = (
            f"tenant_seq {events.first.tenant_seq}..{events.last.tenant_seq}"
            if events.first and events.last
            else ""
        )
        print(
            f"  events: {result.events} {seqs}, chain intact between its signed ends "
            f"(chain head at export: tenant_seq {manifest.chain.head.seq})"
        )
        counts = manifest.counts
        print(
            f"  ledger: {counts.get('datasets')} dataset(s), {counts.get('jobs')} job(s), "
            f"{counts.get('certificates')} certificate(s); budgets add up and every certificate "
            "matches its ledger line"
        )
    else:
        print(f"FAILED: {len(result.problems)} problem(s) in {path}:")
        for problem in result.problems:
            print(f"  - {problem}")
    if result.trusted_key is None:
        print(
            "NOTE: no --public-key given, so this checked only that the bundle is consistent with the key "
            f"shipped inside it ({result.bundle_key or 'none readable'}). Anyone who rewrites a bundle can "
            "re-sign it with a key of their own; verify against the service's key from a trusted place "
            "(GET /audit/public-key, dpsynth admin public-key) with --public-key KEY.pem to rule that out."
        )


def audit_verify(args: argparse.Namespace) -> int:
    """Check an exported audit log or evidence bundle offline; exit 1 if anything was tampered with.

    A bundle (a zip) is checked against ``--public-key`` when given; a plain JSONL or CSV
    export carries no signature.
    """
    path = Path(args.file)
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        trusted = Path(args.public_key).read_bytes() if args.public_key else None
        bundle = verify_bundle(path, trusted_key=trusted)
        _print_bundle(args.file, bundle)
        return 0 if bundle.ok else 1
    if args.public_key:
        raise InvalidRequestError(
            f"{args.file} is a plain export, which is not signed; --public-key checks evidence bundles (.zip)"
        )
    result = verify_file(args.file)
    if result.ok:
        print(f"OK: {result.events} events, chain intact; head hash {result.head_hash}")
        return 0
    print(f"FAILED: {len(result.problems)} problem(s) in {args.file}:")
    for problem in result.problems:
        print(f"  - {problem}")
    return 1
