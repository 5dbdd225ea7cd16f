"""The worker's audit entry: a done audit in the certificate's words, a broken one recorded, not raised."""

from models import Synthesizer
from tests.conftest import make_table
from workers.privacy_audit import audit_rows, empirical_audit


def test_empirical_audit_entry_for_a_fitted_release():
    synth = Synthesizer(epsilon=0.5, seed=1, generator_steps=50).fit(make_table(300, seed=2))
    entry = empirical_audit(synth, rows=300, canaries=64, seed=3)
    assert entry["status"] == "done" and entry["dataset_budget_spent"] == 0.0
    assert entry["canaries"] == 64 and entry["confidence"] == 0.95
    assert 0 <= entry["epsilon_lower_bound"] <= synth.certificate["epsilon"]
    assert entry["attacks"][0]["attack"] == "measured marginals" and entry["seconds"] >= 0
    assert "drawn from this release's model" in entry["base"]


def test_a_broken_audit_is_recorded_not_raised():
    entry = empirical_audit(Synthesizer(epsilon=0.5), rows=300, canaries=64, seed=3)
    assert entry["status"] == "failed"
    assert "NotFittedError" in entry["error"]


def test_audit_rows_never_use_a_row_count_the_certificate_keeps_private():
    public = {"row_count": {"public": True, "value": 800}}
    private = {"row_count": {"public": False, "value": None}}
    assert audit_rows(public, 300) == 800
    assert audit_rows(private, 300) == 300  # the requested release size, which the caller chose
    assert audit_rows({"row_count": {"public": True, "value": 10**7}}, 300) == 50_000
