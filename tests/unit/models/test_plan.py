import math

import pytest

from models import Synthesizer
from models.config import SynthesizerConfig
from models.plan import describe_budget
from models.schema import ColumnKind, ColumnSpec, Schema, infer_schema
from tests.conftest import FAST, make_table


def _specs(**declared: dict) -> list[ColumnSpec]:
    return infer_schema(make_table(50), Schema.from_json({"columns": declared})).kept


def test_shares_add_up_and_follow_the_schema():
    specs = _specs(
        age={"kind": "integer", "bounds": [18, 90]},
        region={"kind": "categorical", "categories": ["north", "south", "east", "west"]},
    )
    split = describe_budget(specs, target=None, rows=1000, config=SynthesizerConfig(epsilon=1.0), delta=1e-5)
    assert math.isclose(split.share(), 1.0)
    names = {line.mechanism for line in split.lines}
    # Public bounds: no bounds step, but the DP quantile-bin cells are still measured.
    assert "domain:age:bounds" not in names and "domain:age:cells" in names
    assert "domain:income:bounds" in names
    # Public categories: a 1-way marginal instead of DP selection.
    assert "domain:region:categories" not in names and "marginal:region" in names
    assert "domain:smoker:categories" in names and "marginal:smoker" not in names
    assert split.share("domain", column="region") == 0.0
    assert split.share("domain", column="income") > split.share("domain", column="age") > 0
    assert {line.stage for line in split.lines} == {"domain", "one-way", "two-way"}
    assert split.share("two-way") == pytest.approx(0.5, abs=0.01)  # the default pair share, 15 pairs
    assert split.delta_partition_selection == pytest.approx(0.25e-5)  # smoker etc. are DP-selected
    pair = next(line for line in split.lines if line.stage == "two-way")
    assert len(pair.columns) == 2


def test_public_domains_everywhere_reserve_no_selection_delta():
    specs = _specs(
        smoker={"kind": "categorical", "categories": ["no", "yes"]},
        region={"kind": "categorical", "categories": ["north", "south", "east", "west"]},
        outcome={"kind": "categorical", "categories": ["no", "yes"]},
    )
    split = describe_budget(specs, target="outcome", rows=1000, config=SynthesizerConfig(), delta=1e-5)
    assert split.delta_partition_selection == 0.0
    assert not [line for line in split.lines if line.mechanism.endswith(":categories")]


def test_the_discriminator_gets_its_share():
    config = SynthesizerConfig(epsilon=2.0, discriminator_share=0.3)
    split = describe_budget(_specs(), target=None, rows=5000, config=config, delta=1e-6)
    assert split.share("dp-sgd") == pytest.approx(0.3)
    assert math.isclose(split.share(), 1.0)
    assert split.epsilon == 2.0


def test_dropped_columns_spend_nothing():
    specs = _specs(income={"kind": "identifier"})
    split = describe_budget(specs, target=None, rows=1000, config=SynthesizerConfig(), delta=1e-5)
    assert all("income" not in line.columns for line in split.lines)
    with pytest.raises(ValueError, match="nothing to synthesize"):
        describe_budget([], target=None, rows=10, config=SynthesizerConfig(), delta=1e-5)
    assert ColumnKind.IDENTIFIER.is_dropped


def test_the_described_plan_is_the_plan_a_fit_runs():
    df = make_table(400, seed=1)
    schema = {"target": "outcome", "columns": {"age": {"kind": "integer", "bounds": [18, 90]}}}
    synth = Synthesizer(epsilon=1.0, delta=1e-4, schema=schema, seed=0, **FAST).fit(df)
    specs = infer_schema(df, Schema.from_json(schema)).kept
    split = describe_budget(specs, target="outcome", rows=len(df), config=synth.config, delta=1e-4)
    spent = {m["name"]: m["noise_multiplier"] for m in synth.certificate["mechanisms"]}
    assert {line.mechanism: line.noise_multiplier for line in split.lines} == pytest.approx(spent)
