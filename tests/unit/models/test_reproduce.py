import copy

import pytest

from models import Synthesizer
from models.reproduce import check_release, file_sha256, recompute_epsilon, rederive, table_sha256
from tests.conftest import FAST, make_table


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A fitted model on disk and the record the service keeps for its release."""
    synth = Synthesizer(epsilon=1.0, seed=4, **FAST).fit(make_table(400, seed=2))
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    synth.save(path)
    table = rederive(path, rows=300, seed=17)
    certificate = copy.deepcopy(synth.certificate)
    certificate["service"] = {
        "reproduce": {
            "model_sha256": file_sha256(path),
            "rows": 300,
            "sample_seed": 17,
            "table_sha256": table_sha256(table),
        }
    }
    return synth, path, table, certificate


def test_the_stored_model_redraws_the_same_table(released):
    _, path, table, _ = released
    again = rederive(path, rows=300, seed=17)
    assert table_sha256(again) == table_sha256(table)
    assert table_sha256(rederive(path, rows=300, seed=18)) != table_sha256(table)


def test_accountant_history_recomputes_the_claimed_epsilon(released):
    _, _, _, certificate = released
    assert recompute_epsilon(certificate) == pytest.approx(certificate["epsilon"], rel=1e-9)
    assert certificate["epsilon"] <= certificate["epsilon_target"]


def test_a_release_checks_out_and_each_kind_of_mismatch_is_named(released, tmp_path):
    synth, path, _, certificate = released
    assert check_release(certificate, path) == []
    claimed_more = copy.deepcopy(certificate)
    claimed_more["epsilon"] = certificate["epsilon"] / 2
    assert any("accountant history gives epsilon" in p for p in check_release(claimed_more, path))
    other_rows = copy.deepcopy(certificate)
    other_rows["service"]["reproduce"]["rows"] = 299
    assert check_release(other_rows, path) == [
        "re-drawing the release gave a different table (SHA-256 differs)"
    ]
    other = Synthesizer(epsilon=1.0, seed=5, **FAST).fit(make_table(400, seed=3))
    other_path = tmp_path / "other.safetensors"
    other.save(other_path)
    problems = check_release(certificate, other_path)
    assert "the model file is not the one the release was drawn from (SHA-256 differs)" in problems
    assert check_release({"service": {}}, path) == [
        "the certificate records nothing to re-derive the release from"
    ]
