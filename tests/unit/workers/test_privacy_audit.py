"""The worker's audit entry: a done audit in the certificate's words, a broken one recorded, not raised."""

from models import Synthesizer
from tests.conftest import make_table
from workers.privacy_audit import empirical_audit


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
