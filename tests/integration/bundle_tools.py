"""Tools to take an audit bundle apart and put it back together, as someone tampering with it would."""

from __future__ import annotations

import hashlib
import io
import json
import warnings
import zipfile
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.core.audit import canonical_json, chain_hash, event_record
from service.core.signing import Signer, encode_signature


class Bundle:
    """A bundle's files, in order, as bytes; ``extra`` holds members added under a name already used."""

    def __init__(self, data: bytes) -> None:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            self.files = {name: archive.read(name) for name in archive.namelist()}
        self.extra: list[tuple[str, bytes]] = []

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        with (
            zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive,
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # zipfile warns about a duplicate name, which is the point
            for name, data in [*self.files.items(), *self.extra]:
                archive.writestr(name, data)
        return out.getvalue()

    # -- parts ---------------------------------------------------------------------------

    def json(self, name: str) -> Any:
        return json.loads(self.files[name])

    def put_json(self, name: str, value: Any) -> None:
        self.files[name] = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()

    @property
    def manifest(self) -> dict[str, Any]:
        return self.json("manifest.json")

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.files["events.jsonl"].decode().splitlines()]

    def lines(self) -> list[bytes]:
        return self.files["events.jsonl"].splitlines(keepends=True)

    def put_lines(self, lines: list[bytes]) -> None:
        self.files["events.jsonl"] = b"".join(lines)

    def put_events(self, events: list[dict[str, Any]]) -> None:
        self.put_lines([(canonical_json(event) + "\n").encode() for event in events])

    def certificate_names(self) -> list[str]:
        return sorted(name for name in self.files if name.startswith("certificates/"))

    @staticmethod
    def pem_of(key: Ed25519PrivateKey) -> bytes:
        return Signer(key).public_pem()

    # -- what a forger does next ---------------------------------------------------------

    def rechain(self) -> None:
        """Recompute every event's hashes from the first one's ``tenant_prev_hash`` on."""
        events = self.events()
        previous = events[0]["tenant_prev_hash"]
        for event in events:
            event["tenant_prev_hash"] = previous
            record = canonical_json(event_record(event))
            event["hash"] = chain_hash(event["prev_hash"], record)
            event["tenant_hash"] = previous = chain_hash(previous, record)
        self.put_events(events)

    def follow_events(self) -> None:
        """Make the manifest's slice ends, count and chain head say what ``events.jsonl`` holds."""
        manifest, events = self.manifest, self.events()
        manifest["events"]["count"] = manifest["counts"]["events"] = len(events)
        last = {"tenant_seq": events[-1]["tenant_seq"], "tenant_hash": events[-1]["tenant_hash"]}
        manifest["events"]["last"] = last
        manifest["chain"]["head"] = {"seq": last["tenant_seq"], "hash": last["tenant_hash"]}
        self.put_json("manifest.json", manifest)

    def rehash(self) -> None:
        """Put each listed file's new SHA-256 in the manifest (and drop the ones that are gone)."""
        manifest = self.manifest
        manifest["files"] = {
            name: {"sha256": hashlib.sha256(self.files[name]).hexdigest(), "bytes": len(self.files[name])}
            for name in manifest["files"]
            if name in self.files
        }
        self.put_json("manifest.json", manifest)

    def resign(self, key: Ed25519PrivateKey) -> None:
        """Rehash, then sign with ``key`` and ship its public key: a self-consistent forgery."""
        signer = Signer(key)
        self.files["public_key.pem"] = signer.public_pem()
        self.rehash()
        manifest = self.manifest
        manifest["public_key"]["fingerprint"] = signer.fingerprint
        self.put_json("manifest.json", manifest)
        self.files["manifest.sig"] = encode_signature(signer.sign(self.files["manifest.json"]))
