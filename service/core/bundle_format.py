"""The names and rules an audit bundle's writer (``bundles.py``) and verifier (``bundle_verify.py``) share.

Kept apart so that verifying a bundle offline loads neither the engine nor a database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from service.core.audit import canonical_json

FORMAT = "dpsynth-audit-bundle/1"
EVENTS, LEDGER, MANIFEST, SIGNATURE, PUBLIC_KEY = (
    "events.jsonl", "ledger.json", "manifest.json", "manifest.sig", "public_key.pem",
)  # fmt: skip
CERTIFICATES = "certificates/"
# Facts about the raw upload that only the custodian sees: a hash of the raw file is not DP (it
# confirms or refutes any guess of the whole table), so auditors and analysts never see it.
CUSTODIAN_ONLY = ("input_sha256",)


def public_certificate(certificate: Mapping[str, Any]) -> dict[str, Any]:
    """A certificate as auditors see it: without the custodian-only facts about the raw input."""
    return {key: value for key, value in certificate.items() if key not in CUSTODIAN_ONLY}


def certificate_digest(certificate: Mapping[str, Any]) -> str:
    """SHA-256 of a certificate's public view as the audit log's canonical JSON.

    The audit log records it when a release is created, so a certificate changed in the
    database afterwards no longer matches its event, even in a freshly signed bundle.
    """
    return hashlib.sha256(canonical_json(public_certificate(certificate)).encode("utf-8")).hexdigest()


# The ledger's slack for sums of floats (``service.core.ledger.SLACK``, which imports the engine).
SLACK = 1e-9


def concerns(event: Mapping[str, Any], dataset_id: str, job_ids: set[str], release_ids: set[str]) -> bool:
    """Whether an exported event concerns the dataset, one of its jobs or one of its releases."""
    kind, object_id = event.get("object_type"), event.get("object_id")
    raw = event.get("details")
    details: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
    return (
        (kind == "dataset" and object_id == dataset_id)
        or (kind == "job" and object_id in job_ids)
        or (kind == "release" and object_id in release_ids)
        or details.get("dataset_id") == dataset_id
        or details.get("job_id") in job_ids
    )
