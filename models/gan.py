"""The DP-GAN phase: a DP-SGD discriminator on real rows, a generator that follows it.

Only the discriminator reads real rows, through DP-SGD: Opacus' Poisson sampling (each
row joins a batch independently with probability ``sample_rate``), per-sample clipping
(book-keeping, see ``clipping.py``), and Opacus' Gaussian noise. Every discriminator
step is charged to the ledger *before* it runs. Generated rows join the discriminator's
batch as negatives; they are post-processing of earlier DP outputs, so each real row
still moves the clipped gradient sum by at most ``max_grad_norm``. The generator's step reads only the
discriminator's parameters (already DP) and generated rows, so it is post-processing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from opacus.optimizers import DPOptimizerFastGradientClipping
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from torch import nn

from models.accounting import Mechanism, PrivacyLedger
from models.clipping import BookKeepingClipper
from models.errors import DPCompatibilityError
from models.fitting import MarginalLoss
from models.networks import Discriminator, Generator, seeded_init, validate_dp_module
from models.noise import PrivacyNoise

DPSGD_NAME = "dp-sgd:discriminator"


@dataclass(frozen=True, kw_only=True)
class DPSGDParams:
    """Everything the accountant needs to know about the discriminator's training.

    Attributes:
        noise_multiplier: noise std over the clipping norm.
        max_grad_norm: per-sample L2 clipping norm C.
        expected_batch_size: batch size of the loader that Opacus turns into Poisson sampling.
        sample_rate: Poisson rate Opacus really uses: 1 / ceil(rows / expected_batch_size).
        steps: discriminator steps.
        poisson_sampling: must be True; kept as a field so a config without it is refused.
    """

    noise_multiplier: float
    max_grad_norm: float
    expected_batch_size: int
    sample_rate: float
    steps: int
    poisson_sampling: bool = True

    def __post_init__(self) -> None:
        if not self.poisson_sampling:
            raise DPCompatibilityError(
                "poisson_sampling=False breaks the DP-SGD accounting (Opacus' accountants assume "
                "Poisson sampling); remove the setting"
            )
        if not self.max_grad_norm > 0:
            raise DPCompatibilityError(f"max_grad_norm must be > 0, got {self.max_grad_norm!r}")

    def mechanism(self, steps: int | None = None) -> Mechanism:
        """The ledger's view of ``steps`` discriminator steps (all of them by default)."""
        return Mechanism(
            name=DPSGD_NAME,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps if steps is None else steps,
            details={
                "max_grad_norm": self.max_grad_norm,
                "expected_batch_size": self.expected_batch_size,
                "poisson_sampling": True,
                "clipping_method": "book-keeping (per-sample, flat)",
            },
        )


def sample_rate_for(rows: int, expected_batch_size: int) -> float:
    """Sample rate Opacus derives from a loader of ``rows`` rows and this batch size."""
    return 1.0 / math.ceil(rows / expected_batch_size)


class _OneShotDPOptimizer(DPOptimizerFastGradientClipping):
    """Opacus' noise-and-scale optimizer for gradients that are already clipped sums.

    Book-keeping clipping produces the whole clipped sum in one backward call, so there is
    nothing to accumulate: the sum is handed to Opacus' noise step as it is instead of
    being deep-copied (which Opacus does to support accumulation, at about a quarter of a
    discriminator step's cost on the CPU).
    """

    def accumulate(self) -> None:
        """Use each ``.grad`` (the clipped sum) as the summed gradient, refusing a second call."""
        for p in self.params:
            if p.summed_grad is not None:
                raise DPCompatibilityError("one clipped backward per DP-SGD step; got a second one")
            p.summed_grad = p.grad


@dataclass
class PrivateDiscriminator:
    """The DP-SGD machinery around one discriminator.

    Poisson sampling and noise are Opacus' (``UniformWithReplacementSampler``,
    ``DPOptimizerFastGradientClipping``); per-sample clipping is book-keeping
    (``clipping.py``), which gives the same clipped sums as Opacus' ghost clipping with
    one backward pass instead of two.
    """

    module: nn.Module
    clipper: BookKeepingClipper
    optimizer: _OneShotDPOptimizer
    sampler: UniformWithReplacementSampler

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One DP-SGD step on a batch (real rows from ``sampler`` plus generated rows)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.clipper.recording():
            logits = self.module(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        self.clipper.backward(loss)
        self.optimizer.step()


def make_private_discriminator(
    disc: nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: int,
    *,
    params: DPSGDParams,
    noise: PrivacyNoise,
) -> PrivateDiscriminator:
    """Wrap ``disc`` and ``optimizer`` for DP-SGD with exactly the planned sample rate.

    Raises:
        DPCompatibilityError: the module fails Opacus' validator or is not an MLP of Linear layers.
    """
    validate_dp_module(disc)
    with warnings.catch_warnings():
        # Opacus warns on every non-secure optimizer; the certificate records secure_mode instead.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        dp_opt = _OneShotDPOptimizer(
            optimizer,
            noise_multiplier=params.noise_multiplier,
            max_grad_norm=params.max_grad_norm,
            expected_batch_size=params.expected_batch_size,
            loss_reduction="mean",
            generator=noise.generator,
            secure_mode=noise.secure_mode,
        )
    sampler = UniformWithReplacementSampler(
        num_samples=rows, sample_rate=params.sample_rate, generator=noise.generator
    )
    clipper = BookKeepingClipper(disc, max_grad_norm=params.max_grad_norm)
    return PrivateDiscriminator(disc, clipper, dp_opt, sampler)


def train_dp_gan(
    gen: Generator,
    real: torch.Tensor,
    marginal_loss: MarginalLoss | None,
    *,
    params: DPSGDParams,
    ledger: PrivacyLedger,
    noise: PrivacyNoise,
    rng: torch.Generator,
    hidden: int = 256,
    lr_d: float = 2e-3,
    lr_g: float = 2e-4,
    adv_weight: float = 1.0,
    on_step: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    state: dict[str, Any] | None = None,
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int = 0,
) -> dict[str, Any]:
    """Run the DP-GAN phase and return its state (discriminator, optimizers, steps done).

    ``state`` from an earlier, interrupted call resumes where it stopped;
    ``on_checkpoint`` receives the state every ``checkpoint_every`` steps, together with
    the ledger that charged them, so a crash loses at most that many steps of work and
    never an unrecorded charge.
    """
    device = real.device
    with seeded_init(rng):
        disc = Discriminator(input_dim=real.shape[1], hidden=hidden).to(device)
    d_opt = torch.optim.Adam(disc.parameters(), lr=lr_d, betas=(0.5, 0.9))
    g_opt = torch.optim.Adam(gen.parameters(), lr=lr_g, betas=(0.5, 0.9))
    done = 0
    if state is not None:
        disc.load_state_dict(state["discriminator"])
        d_opt.load_state_dict(state["d_opt"])
        g_opt.load_state_dict(state["g_opt"])
        done = int(state["steps_done"])
    private = make_private_discriminator(disc, d_opt, len(real), params=params, noise=noise)
    batches = iter(private.sampler)
    n_fake = params.expected_batch_size
    while done < params.steps:
        if should_stop is not None and should_stop():
            break
        try:
            indices = next(batches)
        except StopIteration:
            batches = iter(private.sampler)
            indices = next(batches)
        # Discriminator: charged before its noisy gradient exists.
        ledger.charge(params.mechanism(steps=1))
        with torch.no_grad():
            x_fake = gen.one_hot_sample(gen.pick(n_fake, rng), rng)
        x_real = real[torch.as_tensor(indices, dtype=torch.long, device=device)]
        x = torch.cat([x_real, x_fake])
        y = torch.cat([torch.ones(len(x_real), device=device), torch.zeros(n_fake, device=device)])
        private.step(x, y)
        # Generator: post-processing of the (now DP) discriminator.
        fake = gen.one_hot_sample(gen.pick(n_fake, rng), rng)
        for p in disc.parameters():
            p.requires_grad_(False)
        loss_g = adv_weight * nn.functional.binary_cross_entropy_with_logits(
            disc(fake), torch.ones(n_fake, device=device)
        )
        for p in disc.parameters():
            p.requires_grad_(True)
        if marginal_loss is not None:
            loss_g = loss_g + marginal_loss(gen.probs())
        g_opt.zero_grad(set_to_none=True)
        loss_g.backward()
        g_opt.step()
        done += 1
        if on_step is not None:
            on_step(done)
        if on_checkpoint is not None and checkpoint_every and done % checkpoint_every == 0:
            on_checkpoint(_gan_state(disc, d_opt, g_opt, done))
    return _gan_state(disc, d_opt, g_opt, done)


def _gan_state(
    disc: nn.Module, d_opt: torch.optim.Optimizer, g_opt: torch.optim.Optimizer, done: int
) -> dict[str, Any]:
    return {
        "discriminator": {k: v.detach().cpu().clone() for k, v in disc.state_dict().items()},
        "d_opt": d_opt.state_dict(),
        "g_opt": g_opt.state_dict(),
        "steps_done": done,
    }
