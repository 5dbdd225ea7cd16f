"""The frozen, keyword-only settings of one synthesizer fit.

Privacy parameters are validated here, on construction; the checks that need the
table (delta against the row count) run in ``Synthesizer.fit``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from models.accounting import AccountantName
from models.errors import PrivacyParameterError

DeviceName = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True, kw_only=True)
class SynthesizerConfig:
    """Settings of a fit. Defaults were chosen on public benchmark tables (see bench/).

    Attributes:
        epsilon: target epsilon of the whole release (domain discovery included); > 0.
        delta: target delta; ``None`` picks the largest power of ten <= 1/(10 n).
        accountant: ``"prv"`` (tight numerical composition) or ``"rdp"``.
        discriminator_share: fraction of epsilon given to the DP-SGD discriminator (the
            DP-GAN phase); the rest measures domains and marginals. 0 skips that phase.
        pair_budget_share: share of the marginals' budget (zCDP weight) spent on 2-way
            marginals; the rest measures domains and 1-way marginals. ``None`` picks 0.5
            for up to 60 pairs and less for wider tables, whose many pairs are each too
            noisy to be worth their share (tuned on public tables, see bench/README.md).
        target_pair_share: share of the 2-way budget for pairs with the declared target.
        dpsgd_epochs: expected passes over the data of the discriminator.
        batch_size: expected Poisson batch size of the discriminator.
        max_grad_norm: per-sample clipping norm of the discriminator.
        generator_steps: Adam steps fitting the generator to the measured marginals.
        latent_dim: generator noise width.
        n_codes: size of the generator's fixed bank of noise codes (mixture components).
        hidden: width of the generator's and discriminator's hidden layers.
        cpu_threads: torch threads while fitting on CPU (restored afterwards). The networks
            are small, and on a busy 2-core machine two OpenMP threads ran 10-30x slower
            than one; ``None`` keeps torch's setting.
        max_pair_groups: most groups per column in a 2-way marginal; ``None`` = from noise.
        secure_mode: draw privacy noise from a CSPRNG (needs torchcsprng).
        noise_seed: fix the privacy noise. Tests and benchmarks only: whoever knows it can
            subtract the noise, so the certificate flags it.
        seed: seeds everything that is not privacy noise (initialisation, sampling).
        device: ``"auto"`` uses CUDA when available.
    """

    epsilon: float = 1.0
    delta: float | None = None
    accountant: AccountantName = "prv"
    discriminator_share: float = 0.0
    pair_budget_share: float | None = None
    target_pair_share: float = 0.5
    dpsgd_epochs: float = 3.0
    batch_size: int = 256
    max_grad_norm: float = 1.0
    generator_steps: int = 1500
    latent_dim: int = 64
    n_codes: int = 1024
    hidden: int = 128
    cpu_threads: int | None = 1
    max_pair_groups: int | None = None
    secure_mode: bool = False
    noise_seed: int | None = None
    seed: int | None = None
    device: DeviceName = "auto"

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon) and self.epsilon > 0):
            problems.append(f"epsilon must be a finite number > 0, got {self.epsilon!r}")
        if self.delta is not None and not (isinstance(self.delta, int | float) and 0 < self.delta < 1):
            problems.append(f"delta must be in (0, 1), got {self.delta!r}")
        if self.accountant not in ("prv", "rdp"):
            problems.append(f"accountant must be 'prv' or 'rdp', got {self.accountant!r}")
        if not 0 <= self.discriminator_share < 1:
            problems.append(f"discriminator_share must be in [0, 1), got {self.discriminator_share!r}")
        for name in ("pair_budget_share", "target_pair_share"):
            if getattr(self, name) is not None and not 0 < getattr(self, name) < 1:
                problems.append(f"{name} must be in (0, 1), got {getattr(self, name)!r}")
        for name in ("batch_size", "generator_steps", "latent_dim", "hidden", "n_codes"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                problems.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.dpsgd_epochs > 0 or not self.max_grad_norm > 0:
            problems.append("dpsgd_epochs and max_grad_norm must be > 0")
        if self.cpu_threads is not None and not (isinstance(self.cpu_threads, int) and self.cpu_threads > 0):
            problems.append(f"cpu_threads must be a positive integer or None, got {self.cpu_threads!r}")
        if self.max_pair_groups is not None and self.max_pair_groups < 2:
            problems.append(f"max_pair_groups must be >= 2, got {self.max_pair_groups!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if problems:
            raise PrivacyParameterError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """JSON form; the noise seed itself is never written out."""
        out = asdict(self)
        out["noise_seed"] = None if self.noise_seed is None else "set (value withheld)"
        return out


def default_delta(rows: int) -> float:
    """The largest power of ten at most 1/(10 rows)."""
    return 10.0 ** math.floor(math.log10(1.0 / (10 * rows)))


def check_delta(delta: float, rows: int) -> None:
    """Refuse a delta that is not well below 1/n.

    Raises:
        PrivacyParameterError: delta >= 1/rows.
    """
    if delta >= 1.0 / rows:
        raise PrivacyParameterError(
            f"delta {delta:g} is not below 1/n = {1.0 / rows:g} for this table of {rows} rows: "
            f"such a delta allows releasing a whole row; use delta <= {default_delta(rows):g}"
        )
