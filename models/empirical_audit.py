"""An empirical privacy audit of one fit's mechanisms: canaries, attacks, a lower bound on epsilon.

The audit never touches the dataset: it re-runs the fit's mechanisms, with the fit's
settings, on *public* input with canaries, and the one-run bound (``models.one_run``)
turns the attacks' guesses into a lower bound on epsilon. Each of ``m`` canaries is put
in with probability 1/2.

- ``measured marginals`` (every release type): the measuring phase (domain discovery,
  1-way and 2-way Gaussian marginals, planned for the fit's epsilon, delta and budget
  split) runs on a public base table, typically a draw from the release's own model,
  plus a categorical column whose public categories are ``"none"`` and one label per
  canary; a canary is a base row carrying its label. The attack reads the noisy 1-way
  count of each label. The generator is fitted to these counts only, so this is the
  DP output every later step of a marginal release is computed from.
- ``dp-sgd`` (DP-GAN releases): the fit's DP-SGD machinery (Opacus' Poisson sampler and
  noise, our book-keeping clipping) with its noise multiplier, sample rate, steps and
  clipping norm trains a linear model on canary rows whose clipped gradients each fall on
  their own coordinate (white-box "Dirac" canaries, Steinke et al. section 7). The attack
  reads how far each coordinate moved.

Each attack's bound is a lower bound for the part of the fit it runs, hence for the fit;
confidence is shared over the attacks. A bound at or below the claimed epsilon is
consistent with the claim; one above it proves the claim wrong (e.g. noise switched off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from models.accounting import epsilon_of
from models.checkpoint import Checkpoint
from models.config import SynthesizerConfig
from models.errors import FitCancelledError
from models.gan import DPSGD_NAME, DPSGDParams, make_private_discriminator
from models.noise import PrivacyNoise
from models.one_run import ceiling, epsilon_lower_bound
from models.schema import ColumnKind, ColumnSpec, Schema, infer_schema
from models.synthesizer import Synthesizer
from models.training import FitRun

CANARY_COLUMN = "__dpsynth_canary__"
METHOD = "one-run canary audit (Steinke, Nasr & Jagielski 2023)"


@dataclass(frozen=True)
class AttackResult:
    """One attack: the epsilon claimed for what it ran, its guesses and the bound they give."""

    attack: str
    epsilon_claimed: float
    epsilon_lower_bound: float
    guesses: int
    correct: int


@dataclass(frozen=True)
class AuditResult:
    """The audit of one fit: every attack, and the best bound among them."""

    delta: float
    confidence: float
    canaries: int
    attacks: tuple[AttackResult, ...]
    ceiling: float  # the bound if every guess were right: a claim above it cannot be caught

    @property
    def best(self) -> AttackResult:
        """The attack with the highest bound."""
        return max(self.attacks, key=lambda a: a.epsilon_lower_bound)

    def to_dict(self, *, base: str) -> dict[str, Any]:
        """The certificate's ``empirical_audit`` entry; ``base`` says what public data it ran on."""
        best = self.best
        return {
            "method": METHOD,
            "epsilon_lower_bound": round(best.epsilon_lower_bound, 4),
            "epsilon_ceiling": round(self.ceiling, 4),
            "confidence": self.confidence,
            "canaries": self.canaries,
            "guesses": best.guesses,
            "correct": best.correct,
            "attack": best.attack,
            "attacks": [
                {
                    "attack": a.attack,
                    "epsilon_claimed": a.epsilon_claimed,
                    "epsilon_lower_bound": round(a.epsilon_lower_bound, 4),
                    "guesses": a.guesses,
                    "correct": a.correct,
                }
                for a in self.attacks
            ],
            "delta": self.delta,
            "base": base,
            "dataset_budget_spent": 0.0,
        }


def canary_table(base: pd.DataFrame, members: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """``base`` with a canary column (``"none"``) plus one labelled copy of a random row per member.

    Raises:
        ValueError: the base table is empty or already has the canary column.
    """
    if base.empty:
        raise ValueError("the audit needs a non-empty base table")
    if CANARY_COLUMN in base.columns:
        raise ValueError(f"the base table already has a column {CANARY_COLUMN!r}")
    rows = base.iloc[rng.integers(0, len(base), size=len(members))].reset_index(drop=True)
    rows[CANARY_COLUMN] = [f"canary-{i}" for i in range(len(members))]
    table = pd.concat([base.assign(**{CANARY_COLUMN: "none"}), rows[members]], ignore_index=True)
    return table.iloc[rng.permutation(len(table))].reset_index(drop=True)


def _canary_specs(declared: Schema, table: pd.DataFrame, canaries: int) -> Schema:
    """The release's schema on the table's columns, plus the public canary column."""
    columns = {name: spec for name, spec in declared.columns.items() if name in table.columns}
    columns[CANARY_COLUMN] = ColumnSpec(
        name=CANARY_COLUMN,
        kind=ColumnKind.CATEGORICAL,
        categories=("none", *(f"canary-{i}" for i in range(canaries))),
        nullable=False,
        declared=True,
    )
    target = declared.target if declared.target in table.columns else None
    return infer_schema(table, Schema(columns=columns, target=target))


def marginal_scores(
    base: pd.DataFrame,
    members: np.ndarray,
    *,
    schema: Schema,
    config: SynthesizerConfig,
    delta: float,
    rng: np.random.Generator,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, float]:
    """Each canary label's noisy 1-way count from the fit's measuring phase, and its epsilon."""
    table = canary_table(base, members, rng)
    full = _canary_specs(schema, table, len(members))
    run = FitRun(
        table,
        full.kept,
        target=full.target,
        delta=delta,
        config=config,
        checkpoint=Checkpoint(None, input_sha256="audit", config=config),
        progress=None,
        should_stop=should_stop,
    )
    run.measure()  # the measuring phase alone: the generator and DP-SGD do not run here
    assert run.state.domains is not None and run.state.marginals is not None
    j = [d.name for d in run.state.domains].index(CANARY_COLUMN)
    (one_way,) = [m for m in run.state.marginals if m.columns == (j,)]
    categories = list(run.state.domains[j].categories)  # type: ignore[union-attr]
    tokens = np.array([categories.index(f"canary-{i}") for i in range(len(members))])
    return one_way.counts[one_way.maps[0][tokens]], run.ledger.epsilon_spent()


def dpsgd_scores(
    params: DPSGDParams,
    members: np.ndarray,
    *,
    noise: PrivacyNoise,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """How far DP-SGD with ``params`` moved each canary's own coordinate of a linear model.

    A member is the row ``e_i`` (times the clipping norm, so clipping leaves it whole) with
    per-sample loss ``-w . x``: its clipped gradient is ``-C e_i``. A canary left out is a
    row of zeros, as is every other row of a real table: it adds nothing to any coordinate,
    so ``m`` rows sampled at the planned rate behave, coordinate by coordinate, as ``n``.
    """
    m = len(members)
    model = nn.Sequential(nn.Linear(m, 1, bias=False))
    nn.init.zeros_(model[0].weight)
    rows = torch.diag(torch.as_tensor(members, dtype=torch.float32)) * params.max_grad_norm
    private = make_private_discriminator(
        model, torch.optim.SGD(model.parameters(), lr=1.0), len(rows), params=params, noise=noise
    )
    batches = iter(private.sampler)
    for step in range(params.steps):
        if should_stop is not None and step % 100 == 0 and should_stop():
            raise FitCancelledError("audit cancelled", epsilon_spent=0.0)
        try:
            indices = next(batches)
        except StopIteration:
            batches = iter(private.sampler)
            indices = next(batches)
        private.optimizer.zero_grad(set_to_none=True)
        x = rows[torch.as_tensor(indices, dtype=torch.long)]
        with private.clipper.recording():
            loss = -model(x).squeeze(1)
        private.clipper.backward(loss)
        private.optimizer.step()
    return model[0].weight.detach().squeeze(0).double().numpy()


def dpsgd_params(certificate: dict[str, Any]) -> DPSGDParams | None:
    """The DP-SGD parameters a certificate records (steps as run), or None without DP-GAN."""
    for entry in certificate.get("mechanisms", []):
        if entry.get("name") == DPSGD_NAME and entry.get("steps"):
            return DPSGDParams(
                noise_multiplier=float(entry["noise_multiplier"]),
                max_grad_norm=float(entry["max_grad_norm"]),
                expected_batch_size=int(entry["expected_batch_size"]),
                sample_rate=float(entry["sample_rate"]),
                steps=int(entry["steps"]),
            )
    return None


def canaries_for(
    epsilon: float, *, delta: float, at_least: int, at_most: int = 4096, confidence: float = 0.95
) -> int:
    """Canaries enough that a perfect attack could show 1.25 x ``epsilon`` (doubling ``at_least``).

    An audit whose ceiling is below the claim could never catch it; ``at_most`` bounds the
    cost (the ceiling grows only like log m, and 2 m delta caps it on small tables).
    """
    m = at_least
    alpha = (1.0 - confidence) / 2  # two attacks for a DP-GAN fit; one needs fewer canaries
    while m < at_most and ceiling(m, delta=delta, alpha=alpha) < 1.25 * epsilon:
        m *= 2
    return min(m, at_most)


def audit_fit(
    base: pd.DataFrame,
    *,
    schema: Schema,
    config: SynthesizerConfig,
    delta: float,
    dpsgd: DPSGDParams | None,
    canaries: int = 128,
    confidence: float = 0.95,
    seed: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AuditResult:
    """Audit a fit with ``config`` (and, for a DP-GAN fit, its DP-SGD ``dpsgd`` parameters).

    Args:
        base: public rows for the marginal attack (e.g. a draw from the release's model).
        schema: the release's declared schema (columns missing from ``base`` are ignored).
        config: the fit's settings.
        delta: the fit's delta.
        dpsgd: the fit's DP-SGD parameters (its certificate has them); ``None`` without DP-GAN.
        canaries: canaries per attack (each in with probability 1/2).
        confidence: of the bound, shared by every attack and guess count tried.
        seed: the audit's own randomness (who is in, ties); the privacy noise stays fresh.
        should_stop: polled between steps; True raises ``FitCancelledError``.

    Raises:
        ValueError: ``base`` is empty or ``canaries`` < 2.
        FitCancelledError: ``should_stop`` said so.
    """
    if canaries < 2:
        raise ValueError(f"the audit needs at least 2 canaries, got {canaries}")
    rng = np.random.default_rng(seed)
    runs: list[tuple[str, np.ndarray, np.ndarray, float]] = []
    members = rng.random(canaries) < 0.5
    scores, claimed = marginal_scores(
        base, members, schema=schema, config=config, delta=delta, rng=rng, should_stop=should_stop
    )
    runs.append(("measured marginals", scores, members, claimed))
    if dpsgd is not None:
        members = rng.random(canaries) < 0.5
        noise = PrivacyNoise(secure_mode=config.secure_mode, noise_seed=config.noise_seed)
        scores = dpsgd_scores(dpsgd, members, noise=noise, should_stop=should_stop)
        claimed = epsilon_of(
            [(dpsgd.noise_multiplier, dpsgd.sample_rate, dpsgd.steps)],
            delta=delta,
            accountant=config.accountant,
        )
        runs.append(("dp-sgd", scores, members, claimed))
    alpha = (1.0 - confidence) / len(runs)
    attacks = []
    for name, scores, members, claimed in runs:
        found = epsilon_lower_bound(scores, members, delta=delta, alpha=alpha, rng=rng)
        attacks.append(AttackResult(name, claimed, found.epsilon_lower_bound, found.guesses, found.correct))
    return AuditResult(
        delta=delta,
        confidence=confidence,
        canaries=canaries,
        attacks=tuple(attacks),
        ceiling=ceiling(canaries, delta=delta, alpha=alpha),
    )


def audit_synthesizer(
    synth: Synthesizer,
    *,
    rows: int,
    canaries: int = 128,
    confidence: float = 0.95,
    seed: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AuditResult:
    """Audit a fitted ``Synthesizer`` on ``rows`` rows drawn from itself (no budget is spent).

    Its draw is post-processing of the fit's DP output, so the audit's input is public;
    ``rows`` should be the fit's row count (or a cap on it), as the DP-SGD sample rate and
    the plan depend on it.
    """
    declared = synth.schema if isinstance(synth.schema, Schema | None) else Schema.from_json(synth.schema)
    cert = synth.certificate
    base = synth.sample(rows, random_state=seed)
    return audit_fit(
        base,
        schema=declared or Schema(),
        config=synth.config,
        delta=float(cert["delta"]),
        dpsgd=dpsgd_params(cert),
        canaries=canaries,
        confidence=confidence,
        seed=seed,
        should_stop=should_stop,
    )
