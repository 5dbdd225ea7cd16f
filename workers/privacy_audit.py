"""The empirical privacy audit a worker runs for every release it makes.

The audit attacks the release's own mechanisms, with its own settings, on canaries
planted in rows drawn from the release's model (``models.empirical_audit``): it reads
no raw row and spends nothing from the dataset's budget. Its result goes in the
certificate beside the claimed epsilon. A broken audit never costs the release: the
budget is already spent, so the certificate records that the audit failed instead.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from models import Synthesizer
from models.empirical_audit import audit_synthesizer, canaries_for

log = logging.getLogger(__name__)

# Most rows drawn from the model for the marginal attack: the plan depends on the row
# count, but past this the measuring phase is only slower, not different in kind.
MAX_AUDIT_ROWS = 50_000
BASE = "rows drawn from this release's model (public), plus canaries"


def audit_rows(certificate: dict[str, Any], release_rows: int) -> int:
    """Rows to draw for the audit: the fit's row count where the certificate makes it public.

    Otherwise the requested release size: the audit's result is released, so its input size
    must not be the raw row count when that is not public.
    """
    public = certificate.get("row_count", {}).get("value")
    return max(1, min(int(public if public is not None else release_rows), MAX_AUDIT_ROWS))


def empirical_audit(synth: Synthesizer, *, rows: int, canaries: int, seed: int) -> dict[str, Any]:
    """The certificate's ``empirical_audit`` entry for a fitted synthesizer.

    ``canaries`` is the least number used; more are planted when a perfect attack with
    that many could not show the claimed epsilon (``canaries_for``).
    """
    started = time.monotonic()
    try:
        cert = synth.certificate
        planted = canaries_for(float(cert["epsilon"]), delta=float(cert["delta"]), at_least=canaries)
        result = audit_synthesizer(synth, rows=rows, canaries=planted, seed=seed)
    except Exception as exc:
        log.exception("the empirical audit failed")
        detail = "".join(traceback.format_exception_only(exc)).strip()
        return {"status": "failed", "error": detail[:500]}
    entry = result.to_dict(base=BASE)
    entry["status"] = "done"
    entry["seconds"] = round(time.monotonic() - started, 2)
    return entry
