import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from models import (
    BudgetExceededError,
    FitCancelledError,
    NotFittedError,
    PrivacyParameterError,
    SchemaError,
    SecureModeUnavailableError,
    Synthesizer,
)
from tests.conftest import FAST, make_table


@pytest.fixture(scope="module")
def fitted(table):
    return Synthesizer(epsilon=1.0, seed=0, schema={"target": "outcome"}, **FAST).fit(table)


def test_fit_spends_at_most_the_target_including_domain_discovery(fitted):
    cert = fitted.certificate
    assert 0.9 < cert["epsilon"] <= 1.0
    names = [m["name"] for m in cert["mechanisms"]]
    assert "domain:age:bounds" in names and "domain:age:cells" in names
    assert "domain:region:categories" in names
    assert "marginal:age,outcome" in names
    assert sum(m["epsilon_share"] for m in cert["mechanisms"]) == pytest.approx(1.0)
    assert cert["accountant"]["name"] == "prv"
    assert len(cert["accountant"]["state_dict"]["history"]) == len(cert["mechanisms"])


def test_sample_returns_requested_rows_in_batches(fitted, table):
    syn = fitted.sample(2500, batch_size=1000, random_state=1)
    assert len(syn) == 2500
    assert list(syn.columns) == list(table.columns)
    assert syn["age"].between(0, 200).all()
    assert set(syn["smoker"].dropna()) <= {"yes", "no", "(other)"}
    assert fitted.sample(0).shape == (0, table.shape[1])


def test_sample_is_reproducible_with_random_state(fitted):
    pd.testing.assert_frame_equal(fitted.sample(300, random_state=7), fitted.sample(300, random_state=7))


def test_sample_keeps_correlations_the_marginals_measured(table):
    synth = Synthesizer(epsilon=50.0, seed=0, noise_seed=2, generator_steps=600).fit(table)
    syn = synth.sample(len(table), random_state=0)
    real_gap = table.groupby("smoker")["outcome"].apply(lambda s: (s == "yes").mean()).diff().iloc[-1]
    syn_gap = syn.groupby("smoker")["outcome"].apply(lambda s: (s == "yes").mean()).diff().iloc[-1]
    assert real_gap > 0.15
    assert syn_gap == pytest.approx(real_gap, abs=0.08)


def test_fit_with_rdp_accountant_and_dp_gan_phase(table):
    synth = Synthesizer(
        epsilon=2.0, seed=0, accountant="rdp", discriminator_share=0.3, dpsgd_epochs=1.0, **FAST
    )
    cert = synth.fit(table).certificate
    assert cert["epsilon"] <= 2.0
    dpsgd = next(m for m in cert["mechanisms"] if m["name"] == "dp-sgd:discriminator")
    assert dpsgd["type"] == "poisson_subsampled_gaussian"
    assert dpsgd["poisson_sampling"] is True
    assert dpsgd["steps"] == int(np.ceil(1.0 / dpsgd["sample_rate"]))
    assert dpsgd["sample_rate"] == pytest.approx(1 / np.ceil(len(table) / dpsgd["expected_batch_size"]))
    assert cert["row_count"] == {"public": True, "value": len(table), "why": cert["row_count"]["why"]}


def test_fit_refuses_delta_not_below_one_over_n(table):
    with pytest.raises(PrivacyParameterError) as info:
        Synthesizer(epsilon=1.0, delta=1 / 1000, **FAST).fit(table)
    assert str(info.value) == (
        "delta 0.001 is not below 1/n = 0.0005 for this table of 2000 rows: such a delta allows "
        "releasing a whole row; use delta <= 1e-05"
    )


@pytest.mark.parametrize("eps", [0, -1, float("nan"), float("inf")])
def test_constructor_refuses_bad_epsilon(eps):
    with pytest.raises(PrivacyParameterError, match="epsilon must be a finite number > 0"):
        Synthesizer(epsilon=eps)


def test_default_delta_is_a_power_of_ten_below_one_over_ten_n(fitted, table):
    assert fitted.certificate["delta"] == 1e-5
    assert fitted.certificate["delta"] <= 1 / (10 * len(table))


def test_tiny_epsilon_that_cannot_fit_the_plan_is_refused(table):
    with pytest.raises((BudgetExceededError, PrivacyParameterError)):
        Synthesizer(epsilon=1e-9, **FAST).fit(table)


def test_fit_refuses_bad_tables():
    with pytest.raises(SchemaError, match="no rows"):
        Synthesizer().fit(pd.DataFrame({"a": []}))
    with pytest.raises(SchemaError, match="duplicate column names"):
        Synthesizer().fit(pd.DataFrame([[1, 2]] * 50, columns=["a", "a"]))
    with pytest.raises(SchemaError, match="schema column 'nope' is not in the table"):
        Synthesizer(schema={"columns": {"nope": {"kind": "integer"}}}).fit(make_table(100))


def test_outlier_and_rare_category_never_reach_output_or_certificate():
    df = make_table(3000, seed=3)
    df.loc[0, "income"] = 1e9
    df.loc[[1, 2], "region"] = "ZZZ_CANARY"
    synth = Synthesizer(epsilon=1.0, seed=0, **FAST).fit(df)
    syn = synth.sample(20000, random_state=0)
    cert_text = json.dumps(synth.certificate)
    assert "ZZZ_CANARY" not in cert_text
    assert "ZZZ_CANARY" not in set(syn["region"].astype(str))
    assert syn["income"].max() < 1e8
    income_bounds = synth.certificate["schema"]["domains"]["income"]["bounds"]
    assert income_bounds[1] < 1e8


def test_save_and_load_roundtrip_without_pickle(fitted, tmp_path):
    path = tmp_path / "model.safetensors"
    fitted.save(path)
    with safe_open(str(path), framework="pt") as fh:  # plain tensors and a JSON header
        meta = json.loads(fh.metadata()["dpsynth"])
        assert set(fh.keys()) == set(fitted.generator_.state_dict())
    assert meta["format"] == "dpsynth-model/2" and 'noise_seed": 1' not in json.dumps(meta)
    assert b"\x80\x04" not in path.read_bytes()[:64]  # not a pickle protocol header
    again = Synthesizer.load(path, device="cpu")
    assert again.certificate == fitted.certificate
    pd.testing.assert_frame_equal(again.sample(500, random_state=3), fitted.sample(500, random_state=3))


def test_load_refuses_other_files(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, path)  # a pickle: refused, never unpickled
    with pytest.raises(ValueError, match="is not a dpsynth model file"):
        Synthesizer.load(path)
    other = tmp_path / "y.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="is not a dpsynth model file"):
        Synthesizer.load(other)


def test_unfitted_synthesizer_says_so():
    with pytest.raises(NotFittedError, match="call fit"):
        Synthesizer().sample(3)


def test_fit_does_not_touch_global_rng(table):
    torch_state, np_state = torch.random.get_rng_state(), np.random.get_state()
    Synthesizer(epsilon=1.0, seed=0, discriminator_share=0.2, dpsgd_epochs=0.5, **FAST).fit(table.head(800))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1])


def test_progress_reports_monotone_epsilon_up_to_done(table):
    events = []
    Synthesizer(epsilon=1.0, seed=0, **FAST).fit(table, progress=events.append)
    spent = [e.epsilon_spent for e in events]
    assert spent == sorted(spent)
    assert events[-1].phase == "done" and events[-1].fraction == 1.0
    assert {e.phase for e in events} >= {"measure", "generator", "done"}


def test_progress_epochs_grow_through_the_dp_gan_phase_and_stay_at_done(table):
    events = []
    opts = dict(epsilon=2.0, seed=0, discriminator_share=0.3, dpsgd_epochs=1.0, **FAST)
    Synthesizer(**opts).fit(table.head(800), progress=events.append)
    epochs = [e.epoch for e in events if e.phase == "dp-gan"]
    assert epochs == sorted(epochs) and epochs[-1] == pytest.approx(1.0, rel=0.2)
    assert events[-1].phase == "done" and events[-1].epoch == pytest.approx(epochs[-1])


def test_cancel_during_dp_gan_keeps_the_spend_and_resume_matches_an_uninterrupted_run(table, tmp_path):
    opts = dict(epsilon=2.0, seed=0, discriminator_share=0.3, dpsgd_epochs=1.0, **FAST)
    full = Synthesizer(**opts).fit(table).certificate
    ckpt = tmp_path / "fit.ckpt"
    calls = {"n": 0}

    def stop_midway() -> bool:
        calls["n"] += 1
        return calls["n"] > 10 + FAST["generator_steps"] // 25

    synth = Synthesizer(**opts)
    with pytest.raises(FitCancelledError) as info:
        synth.fit(table, should_stop=stop_midway, checkpoint_path=ckpt)
    partial = synth.certificate
    assert partial["completed"] is False
    assert 0 < info.value.epsilon_spent == partial["epsilon"] < full["epsilon"]
    resumed = Synthesizer(**opts).fit(table, checkpoint_path=ckpt).certificate
    assert resumed["epsilon"] == pytest.approx(full["epsilon"], rel=1e-9)
    steps = {m["name"]: m["steps"] for m in resumed["mechanisms"]}
    assert steps == {m["name"]: m["steps"] for m in full["mechanisms"]}


def test_checkpoint_for_other_data_is_refused(table, tmp_path):
    ckpt = tmp_path / "fit.ckpt"
    Synthesizer(epsilon=1.0, seed=0, **FAST).fit(table, checkpoint_path=ckpt)
    with pytest.raises(ValueError, match="written for other input data or settings"):
        Synthesizer(epsilon=1.0, seed=0, **FAST).fit(table.head(1500), checkpoint_path=ckpt)


def test_secure_mode_fails_clearly_without_a_csprng(table):
    with pytest.raises(SecureModeUnavailableError, match="torchcsprng"):
        Synthesizer(epsilon=1.0, secure_mode=True, **{**FAST, "noise_seed": None}).fit(table)


def test_identifier_column_is_dropped_with_a_warning():
    df = make_table(500)
    df["patient_id"] = np.arange(500)
    with pytest.warns(UserWarning, match="'patient_id' looks like an identifier"):
        synth = Synthesizer(epsilon=1.0, seed=0, **FAST).fit(df)
    assert "patient_id" not in synth.sample(10).columns
    assert synth.certificate["schema"]["dropped"] == ["patient_id"]


def test_datetime_and_boolean_columns_roundtrip_their_types():
    df = make_table(1200, seed=5)
    df["visit"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(1200) % 300, unit="D")
    df["flag"] = np.arange(1200) % 3 == 0
    synth = Synthesizer(epsilon=2.0, seed=0, **FAST).fit(df)
    syn = synth.sample(500, random_state=0)
    assert pd.api.types.is_datetime64_any_dtype(syn["visit"])
    low, high = synth.certificate["schema"]["domains"]["visit"]["bounds"]
    assert syn["visit"].dropna().between(pd.Timestamp(low, unit="s"), pd.Timestamp(high, unit="s")).all()
    assert set(syn["flag"].dropna()) <= {True, False}
    assert synth.certificate["schema"]["domains"]["flag"]["categories_source"] == "public"
