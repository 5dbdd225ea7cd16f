"""Checkpoints of a fit, so that an interrupted fit resumes without spending twice.

A checkpoint holds the ledger (every charge so far), the plan, the DP domains and
marginals, and the network states; it never holds raw rows. It is bound to the input's
SHA-256 and the config: resuming on other data or settings is refused. Files are written
atomically and read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.accounting import PrivacyLedger
from models.config import SynthesizerConfig
from models.domain import Domain
from models.gan import DPSGDParams
from models.marginals import Marginal
from models.persist import domain_from_dict, domain_to_dict, marginal_from_dict, marginal_to_dict
from models.plan import BudgetPlan


@dataclass
class FitState:
    """What a fit has done so far."""

    ledger: PrivacyLedger
    plan: BudgetPlan
    domains: list[Domain] | None = None
    marginals: list[Marginal] | None = None
    generator: dict[str, torch.Tensor] | None = None
    gan: dict[str, Any] | None = None


def _plan_to_dict(plan: BudgetPlan) -> dict[str, Any]:
    return {
        "sigma": plan.sigma,
        "pairs": [list(p) for p in plan.pairs],
        "dpsgd": asdict(plan.dpsgd) if plan.dpsgd else None,
        "epsilon_planned": plan.epsilon_planned,
    }


def _plan_from_dict(raw: dict[str, Any]) -> BudgetPlan:
    return BudgetPlan(
        sigma=raw["sigma"],
        pairs=[(a, b) for a, b in raw["pairs"]],
        dpsgd=DPSGDParams(**raw["dpsgd"]) if raw["dpsgd"] else None,
        epsilon_planned=raw["epsilon_planned"],
    )


class Checkpoint:
    """Reads and writes one fit's checkpoint file; every method is a no-op without a path."""

    def __init__(self, path: str | Path | None, *, input_sha256: str, config: SynthesizerConfig) -> None:
        self.path = Path(path) if path is not None else None
        self.binding = {"input_sha256": input_sha256, "config": config.to_dict()}

    def load(self) -> FitState | None:
        """The saved state, or None when there is no checkpoint yet.

        Raises:
            ValueError: the checkpoint belongs to other data or other settings.
        """
        if self.path is None or not self.path.exists():
            return None
        blob = torch.load(self.path, map_location="cpu", weights_only=True)
        meta = json.loads(blob["meta"])
        if meta["binding"] != self.binding:
            raise ValueError(
                f"checkpoint {str(self.path)!r} was written for other input data or settings; "
                "delete it or point checkpoint_path elsewhere"
            )
        return FitState(
            ledger=PrivacyLedger.from_state_dict(meta["ledger"]),
            plan=_plan_from_dict(meta["plan"]),
            domains=[domain_from_dict(d) for d in meta["domains"]],
            marginals=[marginal_from_dict(m) for m in meta["marginals"]],
            generator=blob.get("generator"),
            gan=blob.get("gan"),
        )

    def _write(self, state: FitState) -> None:
        if self.path is None:
            return
        meta = {
            "binding": self.binding,
            "ledger": state.ledger.state_dict(),
            "plan": _plan_to_dict(state.plan),
            "domains": [domain_to_dict(d) for d in state.domains or []],
            "marginals": [marginal_to_dict(m) for m in state.marginals or []],
        }
        blob: dict[str, Any] = {"meta": json.dumps(meta)}
        if state.generator is not None:
            blob["generator"] = state.generator
        if state.gan is not None:
            blob["gan"] = state.gan
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(blob, tmp)
        os.replace(tmp, self.path)

    def save_measured(
        self, *, ledger: PrivacyLedger, plan: BudgetPlan, domains: list[Domain], marginals: list[Marginal]
    ) -> FitState:
        """Record the measurement phase (all full-table mechanisms have run)."""
        state = FitState(ledger=ledger, plan=plan, domains=domains, marginals=marginals)
        self._write(state)
        return state

    def save_generator(self, state: FitState, generator: dict[str, torch.Tensor]) -> None:
        """Record the generator fitted to the marginals."""
        state.generator = {k: v.detach().cpu().clone() for k, v in generator.items()}
        self._write(state)

    def save_gan(self, state: FitState, generator: dict[str, torch.Tensor], gan: dict[str, Any]) -> None:
        """Record DP-GAN progress together with the ledger that charged it."""
        state.gan = gan
        self.save_generator(state, generator)
