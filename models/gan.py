"""The DP-GAN phase: a DP-SGD discriminator on real rows, a generator that follows it.

Only the discriminator reads real rows, through Opacus: Poisson sampling (each row
joins a batch independently with probability ``sample_rate``), per-sample clipping by
ghost clipping, and Gaussian noise. Every discriminator step is charged to the ledger
*before* it runs. Generated rows join the discriminator's batch as negatives; they are
post-processing of earlier DP outputs, so each real row still moves the clipped
gradient sum by at most ``max_grad_norm``. The generator's step reads only the
discriminator's parameters (already DP) and generated rows, so it is post-processing.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, Dataset

from models.accounting import Mechanism, PrivacyLedger
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
                "grad_sample_mode": "ghost",
                "clipping": "flat",
            },
        )


@contextlib.contextmanager
def quiet_hooks() -> Iterator[None]:
    """Silence torch's notice that Opacus' backward hooks fire on inputs without gradients.

    The discriminator's inputs are data, which never need gradients; the notice is expected.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        yield


def sample_rate_for(rows: int, expected_batch_size: int) -> float:
    """Sample rate Opacus derives from a loader of ``rows`` rows and this batch size."""
    return 1.0 / math.ceil(rows / expected_batch_size)


class _Rows(Dataset):
    """Rows of a tensor; ``__getitems__`` fetches a whole Poisson batch in one indexing op."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor]:
        return (self.x[i],)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor]:
        return (self.x[indices],)


def _identity(batch: Any) -> Any:
    return batch


def make_private_discriminator(
    disc: nn.Module,
    optimizer: torch.optim.Optimizer,
    real: torch.Tensor,
    *,
    params: DPSGDParams,
    noise: PrivacyNoise,
    accountant: str,
) -> tuple[Any, Any, Any, DataLoader, PrivacyEngine]:
    """Opacus' private module, optimizer, ghost-clipping criterion and Poisson loader.

    Raises:
        DPCompatibilityError: the module fails Opacus' validator, or Opacus would sample at
            another rate than the one the plan was accounted with.
    """
    validate_dp_module(disc)
    with warnings.catch_warnings():
        # Opacus warns on every non-secure engine; the certificate records secure_mode instead.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=accountant, secure_mode=noise.secure_mode)
    generator = None if noise.secure_mode else noise.generator
    loader = DataLoader(
        _Rows(real), batch_size=params.expected_batch_size, collate_fn=_identity, generator=generator
    )
    module, opt, criterion, dp_loader = engine.make_private(
        module=disc,
        optimizer=optimizer,
        criterion=nn.BCEWithLogitsLoss(),
        data_loader=loader,
        noise_multiplier=params.noise_multiplier,
        max_grad_norm=params.max_grad_norm,
        poisson_sampling=params.poisson_sampling,
        grad_sample_mode="ghost",
        noise_generator=generator,
    )
    if abs(dp_loader.sample_rate - params.sample_rate) > 1e-12:
        raise DPCompatibilityError(
            f"Opacus samples at rate {dp_loader.sample_rate!r} but the plan assumed {params.sample_rate!r}"
        )
    return module, opt, criterion, dp_loader, engine


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
    d_module, d_opt_dp, criterion, dp_loader, engine = make_private_discriminator(
        disc, d_opt, real, params=params, noise=noise, accountant=ledger.accountant
    )
    batches = iter(dp_loader)
    n_fake = params.expected_batch_size
    start = done
    while done < params.steps:
        if should_stop is not None and should_stop():
            break
        try:
            (x_real,) = next(batches)
        except StopIteration:
            batches = iter(dp_loader)
            (x_real,) = next(batches)
        # Discriminator: charged before its noisy gradient exists.
        ledger.charge(params.mechanism(steps=1))
        with torch.no_grad():
            x_fake = gen.one_hot_sample(gen.pick(n_fake, rng), rng)
        x = torch.cat([x_real.to(device), x_fake])
        y = torch.cat([torch.ones(len(x_real), device=device), torch.zeros(n_fake, device=device)])
        d_opt_dp.zero_grad(set_to_none=True)
        with quiet_hooks():
            loss_d = criterion(d_module(x), y)
            loss_d.backward()
        d_opt_dp.step()
        # Generator: post-processing of the (now DP) discriminator.
        d_module.disable_hooks()
        fake = gen.one_hot_sample(gen.pick(n_fake, rng), rng)
        loss_g = adv_weight * nn.functional.binary_cross_entropy_with_logits(
            d_module(fake), torch.ones(n_fake, device=device)
        )
        if marginal_loss is not None:
            loss_g = loss_g + marginal_loss(gen.probs())
        g_opt.zero_grad(set_to_none=True)
        loss_g.backward()
        g_opt.step()
        d_module.enable_hooks()
        done += 1
        if on_step is not None:
            on_step(done)
        if on_checkpoint is not None and checkpoint_every and done % checkpoint_every == 0:
            on_checkpoint(_gan_state(disc, d_opt, g_opt, done))
    # Opacus' own accountant saw every optimizer step; it must agree with our ledger.
    opacus_steps = sum(steps for _, _, steps in engine.accountant.history)
    if opacus_steps != done - start:
        raise RuntimeError(f"Opacus counted {opacus_steps} DP steps but the ledger charged {done - start}")
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
