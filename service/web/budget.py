"""The budget split a job would use, shown before anything runs (schema review, job form).

Computed by the engine's own planner (``models.plan.describe_budget``) from the saved
schema (kinds, public domains, target) and the row count the worker will train on:
no value of the data is read. The row count is a raw fact, so these pages are the
custodian's.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from models.config import SynthesizerConfig, default_delta
from models.errors import DPSynthError
from models.plan import BudgetSplit, Stage, describe_budget
from models.schema import Schema
from service.api.schemas import DatasetCustodian
from service.core.ledger import default_job_delta
from workers.runner import HOLDOUT_SHARE

STAGES: list[tuple[Stage, str, str]] = [
    (
        "domain",
        "Domain discovery",
        "bounds, DP quantile bins and category sets of the columns not declared public",
    ),
    ("one-way", "1-way marginals", "noisy counts of each declared-public category column"),
    ("two-way", "2-way marginals", "noisy counts of column pairs; the generator is fitted to them"),
    ("dp-sgd", "DP-SGD discriminator", "the DP-GAN phase"),
]


@dataclass(frozen=True)
class BudgetView:
    """What the pages show: shares by stage and by column, for a job of ``epsilon``."""

    epsilon: float
    delta: float
    delta_partition_selection: float
    stages: list[dict[str, Any]]
    columns: dict[str, dict[str, float]]
    training_share: float

    @property
    def segments(self) -> list[tuple[str, float, str]]:
        """The stages as bar segments: (css class, share, title)."""
        return [(f"seg-{s['key']}", s["share"], s["title"]) for s in self.stages]


def train_rows(row_count: int) -> int:
    """Rows the worker trains on (the rest is held out for the quality report)."""
    return row_count - int(row_count * HOLDOUT_SHARE)


def job_delta(dataset: DatasetCustodian) -> float:
    """The delta a job gets by default (a tenth of the total), as the ledger picks it."""
    total = dataset.budget.delta_total if dataset.budget else None
    return default_job_delta(dataset.row_count, total) if total else default_delta(dataset.row_count)


def default_epsilon(dataset: DatasetCustodian) -> float:
    """A sensible first job: epsilon 1, or what remains when that is less."""
    remaining = dataset.budget.epsilon_remaining if dataset.budget else 0.0
    return round(min(1.0, remaining), 3) if remaining > 0 else 1.0


@functools.lru_cache(maxsize=64)
def _split(schema_json: str, rows: int, epsilon: float, delta: float) -> BudgetSplit:
    schema = Schema.from_json(json.loads(schema_json))
    config = SynthesizerConfig(epsilon=epsilon)
    return describe_budget(schema.kept, target=schema.target, rows=rows, config=config, delta=delta)


def budget_view(dataset: DatasetCustodian, *, epsilon: float | None = None) -> BudgetView | str:
    """The split for a job of ``epsilon`` (default ``default_epsilon``), or why there is none."""
    epsilon = epsilon or default_epsilon(dataset)
    delta = job_delta(dataset)
    try:
        split = _split(
            json.dumps(dataset.schema_, sort_keys=True), train_rows(dataset.row_count), epsilon, delta
        )
    except (DPSynthError, ValueError) as exc:
        return f"No plan yet: {exc}"
    stages = [
        {
            "key": key,
            "title": title,
            "what": what,
            "share": split.share(key),
            "epsilon": epsilon * split.share(key),
        }
        for key, title, what in STAGES
        if split.share(key) > 0
    ]
    columns = {
        name: {key: split.share(key, column=name) for key, _, _ in STAGES}
        for name in {c for line in split.lines for c in line.columns}
    }
    return BudgetView(
        epsilon=epsilon,
        delta=delta,
        delta_partition_selection=split.delta_partition_selection,
        stages=stages,
        columns=columns,
        training_share=split.share("one-way", "two-way", "dp-sgd"),
    )
