"""Verifying an audit bundle offline: signature, file hashes, chain, ledger and certificates.

See ``bundles.py`` for the format. :func:`verify_bundle` needs the zip and, to rule out a
bundle re-signed by someone else, the service's public key from a trusted place; it never
talks to the service and never sees raw data. Every check runs, and every problem found
is listed (up to 100), so one run says all that is wrong with a bundle:

- the signature of ``manifest.json`` (against the trusted key when given, else only
  against the key shipped in the bundle, which proves self-consistency and nothing more);
- every file against its SHA-256 in the manifest; no file missing, none added;
- the events: every hash, every link of the tenant chain from the manifest's signed start
  to its signed end (and to the chain's head at export when the range is open), so an
  edited, deleted, inserted, reordered or truncated event is found;
- the ledger: each dataset's budget against its job lines, totals never exceeded;
- the certificates: each names the release of its file name and the job and dataset of its
  ledger line, and a succeeded job's charge is its certificate's epsilon;
- the events against the ledger: reservations, final states and charges as logged.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from service.core import signing
from service.core.audit import tenant_chain
from service.core.audit_verify import ChainChecker
from service.core.bundle_checks import (
    JobEvent,
    LedgerModel,
    Manifest,
    check_certificates,
    check_certificates_against_events,
    check_events_against_ledger,
    check_ledger,
    shape_problem,
)
from service.core.bundle_format import (
    CERTIFICATES,
    EVENTS,
    FORMAT,
    LEDGER,
    MANIFEST,
    PUBLIC_KEY,
    SIGNATURE,
    concerns,
)

_MAX_PROBLEMS = 100
_MAX_FILE = 256 << 20  # files other than events.jsonl are read whole; a bigger one is refused


@dataclass
class BundleResult:
    """The outcome of verifying a bundle.

    Attributes:
        ok: True when no problem was found.
        problems: Plain-words problems, the most basic first.
        trusted_key: The fingerprint of the trusted key it was checked against; None when
            only the key shipped in the bundle was used (self-consistency only).
        bundle_key: The fingerprint of the key shipped in the bundle, when readable.
        manifest: The parsed manifest, when readable.
        events: How many events were read.
    """

    ok: bool
    problems: list[str]
    trusted_key: str | None
    bundle_key: str | None
    manifest: Manifest | None
    events: int = 0


@dataclass
class _Verifier:
    archive: zipfile.ZipFile
    trusted: Ed25519PublicKey | None
    problems: list[str] = field(default_factory=list)
    bundle_key: str | None = None
    manifest: Manifest | None = None
    events: int = 0

    def problem(self, text: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == _MAX_PROBLEMS:
            self.problems.append("and more problems")

    def read(self, name: str) -> bytes | None:
        """A whole member, or None (with a problem) when it cannot be read."""
        try:
            info = self.archive.getinfo(name)
            if info.file_size > _MAX_FILE:
                self.problem(f"{name} is {info.file_size:,} bytes, more than any bundle file may be")
                return None
            with self.archive.open(info) as fh:
                return fh.read(_MAX_FILE + 1)[:_MAX_FILE]
        except KeyError:
            return None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            self.problem(f"{name} cannot be read from the zip ({exc}): the archive is damaged")
            return None

    def result(self) -> BundleResult:
        trusted = signing.fingerprint(self.trusted) if self.trusted is not None else None
        return BundleResult(
            not self.problems, self.problems, trusted, self.bundle_key, self.manifest, self.events
        )

    # -- the checks, in order ------------------------------------------------------------

    def check_names(self) -> list[str]:
        names = [info.filename for info in self.archive.infolist() if not info.is_dir()]
        for name, count in Counter(names).items():
            if count > 1:
                self.problem(
                    f"{name} is in the zip {count} times: a file was added under a name already there"
                )
        return sorted(set(names))

    def check_signature(self, manifest_bytes: bytes) -> None:
        pem = self.read(PUBLIC_KEY)
        bundled = None
        if pem is None:
            self.problem(f"{PUBLIC_KEY} is missing: the bundle does not say which key signed it")
        else:
            try:
                bundled = signing.load_public_pem(pem)
            except ValueError as exc:
                self.problem(f"{PUBLIC_KEY} is unusable: {exc}")
            else:
                self.bundle_key = signing.fingerprint(bundled)
        sig_text = self.read(SIGNATURE)
        if sig_text is None:
            self.problem(f"{SIGNATURE} is missing: the manifest is not signed")
            return
        try:
            signature = signing.decode_signature(sig_text)
        except ValueError as exc:
            self.problem(f"{SIGNATURE} {exc}: it is not an Ed25519 signature")
            return
        if self.trusted is not None:
            trusted = signing.fingerprint(self.trusted)
            if self.bundle_key is not None and self.bundle_key != trusted:
                self.problem(
                    f"the bundle's key {self.bundle_key} is not the trusted key {trusted}: "
                    "the bundle was re-signed with another key"
                )
            if not signing.verify(self.trusted, signature, manifest_bytes):
                self.problem(
                    f"{SIGNATURE} does not verify against {MANIFEST} with the trusted key: the manifest "
                    "was changed after it was signed, or signed with another key"
                )
        elif bundled is not None and not signing.verify(bundled, signature, manifest_bytes):
            self.problem(
                f"{SIGNATURE} does not verify against {MANIFEST} with the bundle's own key: "
                "the manifest was changed after it was signed"
            )

    def parse_manifest(self, manifest_bytes: bytes) -> Manifest | None:
        try:
            manifest = Manifest.model_validate(json.loads(manifest_bytes))
        except ValueError as exc:  # ValidationError and JSONDecodeError are ValueErrors
            what = shape_problem(exc) if isinstance(exc, ValidationError) else f"not JSON ({exc})"
            self.problem(f"{MANIFEST} is not a bundle manifest: {what}")
            return None
        if manifest.format != FORMAT:
            self.problem(f"{MANIFEST} is of format {manifest.format!r}; this verifier reads {FORMAT!r}")
        if manifest.chain.name != tenant_chain(manifest.scope.tenant_id):
            self.problem(f"{MANIFEST} names the chain {manifest.chain.name!r}, not the tenant's")
        if self.bundle_key is not None and manifest.public_key.fingerprint != self.bundle_key:
            self.problem(
                f"{MANIFEST} names the key {manifest.public_key.fingerprint}, but {PUBLIC_KEY} "
                f"is {self.bundle_key}: the key file was replaced"
            )
        return manifest

    def check_files(self, manifest: Manifest, names: list[str]) -> None:
        for name in names:
            if name not in manifest.files and name not in (MANIFEST, SIGNATURE):
                self.problem(f"{name} is in the bundle but not in the manifest: a file was added")
        for name in (EVENTS, LEDGER, PUBLIC_KEY):
            if name not in manifest.files:
                self.problem(f"{MANIFEST} does not list {name}")
        for name in manifest.files:
            if name not in names:
                self.problem(f"{name} is in the manifest but not in the bundle: a file was removed")
            elif name != EVENTS:  # hashed while its events are read
                data = self.read(name)
                if data is not None:
                    self.compare_hash(name, hashlib.sha256(data).hexdigest(), len(data))

    def compare_hash(self, name: str, sha256: str, size: int) -> None:
        assert self.manifest is not None
        entry = self.manifest.files[name]
        if (entry.sha256, entry.bytes) != (sha256, size):
            self.problem(
                f"{name}: its SHA-256 is not the one in the manifest: the file was changed after export"
            )

    def read_ledger(self) -> LedgerModel | None:
        data = self.read(LEDGER)
        if data is None:
            return None
        try:
            return LedgerModel.model_validate(json.loads(data))
        except ValueError as exc:
            what = shape_problem(exc) if isinstance(exc, ValidationError) else f"not JSON ({exc})"
            self.problem(f"{LEDGER} is not a bundle ledger: {what}")
            return None

    def read_certificates(self, names: list[str]) -> tuple[dict[str, Any], set[str]]:
        assert self.manifest is not None
        certificates: dict[str, Any] = {}
        listed = {n for n in self.manifest.files if n.startswith(CERTIFICATES)} | {
            n for n in names if n.startswith(CERTIFICATES)
        }
        ids = set()
        for name in sorted(listed):
            release_id = name.removeprefix(CERTIFICATES).removesuffix(".json")
            if not name.endswith(".json") or "/" in release_id:
                self.problem(f"{name} is not where a certificate goes ({CERTIFICATES}<release id>.json)")
                continue
            ids.add(release_id)
            data = self.read(name) if name in names else None
            if data is None:
                continue
            try:
                certificates[release_id] = json.loads(data)
            except ValueError as exc:
                self.problem(f"{name} is not JSON ({exc})")
            if not isinstance(certificates.get(release_id), dict):
                self.problem(f"{name} is not a certificate (a JSON object)")
        return certificates, {i for i in ids if f"{CERTIFICATES}{i}.json" in names}

    def check_events(self, manifest: Manifest, ledger: LedgerModel | None) -> list[JobEvent]:
        """Stream events.jsonl: its hash, the chain slice and its signed ends; keep job facts."""
        scope, first = manifest.scope, manifest.events.first
        start = (first.tenant_seq - 1, first.tenant_prev_hash) if first else (0, "")
        checker = ChainChecker.for_slice(scope.tenant_id, after_seq=start[0], after_hash=start[1])
        job_ids = {line.job_id for d in ledger.datasets for line in d.lines} if ledger else set()
        release_ids = (
            {r for d in ledger.datasets for line in d.lines for r in line.release_ids} if ledger else set()
        )
        marked, facts, sha, size, end = [], [], hashlib.sha256(), 0, None
        times: list[Any] = []  # the first and the last event's time
        if EVENTS not in self.archive.namelist():
            return []
        try:
            with self.archive.open(EVENTS) as fh:
                for number, raw in enumerate(fh, 1):
                    sha.update(raw)
                    size += len(raw)
                    if not raw.strip():
                        continue
                    where = f"{EVENTS} line {number}"
                    try:
                        row = json.loads(raw.decode("utf-8", errors="replace"))
                    except ValueError:
                        row = None
                    if not isinstance(row, dict):
                        checker.feed(where, "is not a JSON object")
                        continue
                    checker.feed(where, row)
                    if not isinstance(row.get("tenant_seq"), int):
                        continue
                    end = (row["tenant_seq"], row.get("tenant_hash"))
                    times[1:] = [row.get("at")] if times else [row.get("at"), row.get("at")]
                    if scope.dataset_id is not None and concerns(row, scope.dataset_id, job_ids, release_ids):
                        marked.append(row["tenant_seq"])
                    if fact := _job_fact(row):
                        facts.append(fact)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            self.problem(f"{EVENTS} cannot be read from the zip ({exc}): the archive is damaged")
            return facts
        self.events = checker.events
        for text in checker.problems:
            self.problem(text)
        if EVENTS in manifest.files:
            self.compare_hash(EVENTS, sha.hexdigest(), size)
        self.check_ends(manifest, end, checker.events)
        if times:
            self.check_times(times[0], times[-1], scope.since, scope.until)
        if scope.dataset_id is not None and manifest.events.dataset_event_seqs != marked:
            self.problem(
                f"{MANIFEST} marks the events at tenant_seq {manifest.events.dataset_event_seqs} as "
                f"concerning dataset {scope.dataset_id}, but the events and the ledger say {marked}"
            )
        return facts

    def check_times(self, first: Any, last: Any, since: str | None, until: str | None) -> None:
        """The slice starts at an event at or after ``since`` and ends at one at or before ``until``.

        Only its ends: between them, clocks of several API processes may disagree a little,
        and the slice is by sequence number, so that no event inside it is left out.
        """
        if since and isinstance(first, str) and first < since:
            self.problem(f"{EVENTS} starts with an event at {first}, before the bundle's start {since}")
        if until and isinstance(last, str) and last > until:
            self.problem(f"{EVENTS} ends with an event at {last}, after the bundle's end {until}")

    def check_ends(self, manifest: Manifest, end: tuple[int, Any] | None, count: int) -> None:
        signed = manifest.events.last
        if count != manifest.events.count:
            self.problem(f"{EVENTS} holds {count} events, but the manifest says {manifest.events.count}")
        if signed is None:
            if end is not None:
                self.problem(f"{EVENTS} holds events, but the manifest says the time range has none")
        elif end is None or end != (signed.tenant_seq, signed.tenant_hash):
            ends = "no event" if end is None else f"tenant_seq {end[0]}"
            cut = end is None or end[0] < signed.tenant_seq
            self.problem(
                f"{EVENTS} ends at {ends}, but the signed manifest says it ends at tenant_seq "
                f"{signed.tenant_seq}: "
                + ("events were cut off the end" if cut else "its last event is not the signed one")
            )
        head = manifest.chain.head
        # Open-ended: a slice reaches the head (an empty one, with ``since`` after every event, may not).
        if manifest.scope.until is None and signed is not None and signed.tenant_seq != head.seq:
            self.problem(
                f"the events end before the chain's head at export (tenant_seq {head.seq}), "
                "which a bundle without an end time must reach"
            )
        if signed is not None and signed.tenant_seq == head.seq and signed.tenant_hash != head.hash:
            self.problem("the last event is not the chain's head at export: the chain was rewritten")


def _job_fact(row: dict[str, Any]) -> JobEvent | None:
    action, details = row.get("action"), row.get("details")
    if not isinstance(action, str) or not isinstance(details, dict):
        return None
    kind = row.get("object_type")
    if not (
        action == "dataset.upload"
        or (action.startswith("job.") and kind == "job")
        or (action == "release.created" and kind == "release")
    ):
        return None
    dataset_id = details.get("dataset_id")
    return JobEvent(
        tenant_seq=row["tenant_seq"],
        action=action,
        object_id=row.get("object_id") if isinstance(row.get("object_id"), str) else None,
        dataset_id=dataset_id if isinstance(dataset_id, str) else None,
        details=details,
    )


def verify_bundle(path: str | Path, *, trusted_key: bytes | None = None) -> BundleResult:
    """Verify a bundle from ``GET /audit/bundles``; needs no service and no raw data.

    ``trusted_key`` is the service's public key as PEM, from a trusted place. Without it
    the signature is checked only against the key inside the bundle, which anyone who
    rewrote the bundle could have replaced: ``BundleResult.trusted_key`` is then None.

    Raises:
        ValueError: ``trusted_key`` is not an Ed25519 public key in PEM.
        FileNotFoundError: there is no file at ``path``.
    """
    trusted = signing.load_public_pem(trusted_key) if trusted_key is not None else None
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        problems = [f"{Path(path).name} is not a zip archive ({exc}): not an audit bundle, or a damaged one"]
        fingerprint = signing.fingerprint(trusted) if trusted else None
        return BundleResult(False, problems, fingerprint, None, None)
    with archive:
        verifier = _Verifier(archive, trusted)
        names = verifier.check_names()
        manifest_bytes = verifier.read(MANIFEST)
        if manifest_bytes is None:
            verifier.problem(
                f"{MANIFEST} is missing: this is not an audit bundle, or its manifest was removed"
            )
            return verifier.result()
        verifier.check_signature(manifest_bytes)
        manifest = verifier.manifest = verifier.parse_manifest(manifest_bytes)
        if manifest is None:
            return verifier.result()
        verifier.check_files(manifest, names)
        ledger = verifier.read_ledger()
        facts = verifier.check_events(manifest, ledger)
        certificates, listed = verifier.read_certificates(names)
        if ledger is not None:
            _check_contents(verifier, manifest, ledger, certificates, listed, facts)
        return verifier.result()


def _check_contents(
    verifier: _Verifier,
    manifest: Manifest,
    ledger: LedgerModel,
    certificates: dict[str, Any],
    listed: set[str],
    facts: list[JobEvent],
) -> None:
    scope = manifest.scope
    in_ledger = [d.dataset_id for d in ledger.datasets]
    if scope.dataset_id is not None and in_ledger != [scope.dataset_id]:
        verifier.problem(
            f"{LEDGER} holds datasets {in_ledger}, but the bundle is of dataset {scope.dataset_id} alone"
        )
    check_ledger(ledger, verifier.problem)
    check_certificates(ledger, certificates, listed, verifier.problem)
    check_certificates_against_events(facts, certificates, verifier.problem)
    check_events_against_ledger(facts, ledger, verifier.problem, whole_tenant=scope.dataset_id is None)
    counts = {  # the events' count is checked with their signed ends
        "datasets": len(ledger.datasets),
        "jobs": sum(len(d.lines) for d in ledger.datasets),
        "releases": sum(len(line.release_ids) for d in ledger.datasets for line in d.lines),
        "certificates": len(listed),
    }
    for name, count in counts.items():
        if manifest.counts.get(name) != count:
            verifier.problem(
                f"{MANIFEST} counts {manifest.counts.get(name)} {name}, but the bundle holds {count}"
            )
