"""One fit, phase by phase: plan, measure, fit the generator, optionally the DP-GAN phase.

``FitRun`` holds what the phases share (ledger, plan, noise, checkpoint) so each phase
is a short method. Phases already recorded in the checkpoint are skipped on resume, so
no mechanism ever runs twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from models.checkpoint import Checkpoint, FitState
from models.config import SynthesizerConfig
from models.errors import FitCancelledError
from models.fitting import MarginalLoss, fit_generator
from models.gan import train_dp_gan
from models.measure import discover_domains, estimated_rows, measure_marginals
from models.networks import Generator, seeded_init
from models.noise import PrivacyNoise
from models.plan import make_plan, new_ledger
from models.schema import ColumnSpec
from models.transform import TableEncoder

Phase = Literal["measure", "generator", "dp-gan", "done"]
_GENERATOR_LR = 1e-2
_STOP_LOSS = 1.0  # a fit within the measurements' noise; closer only fits the noise


@dataclass(frozen=True)
class ProgressEvent:
    """Where a fit stands; ``epsilon_spent`` only ever grows."""

    phase: Phase
    step: int
    total_steps: int
    epoch: float
    epsilon_spent: float

    @property
    def fraction(self) -> float:
        """Share of the fit's steps done, in [0, 1]."""
        return min(self.step / self.total_steps, 1.0) if self.total_steps else 1.0


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for missing CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(n: int | None, device: torch.device) -> Iterator[None]:
    """Use ``n`` intra-op threads on CPU for the duration, then restore the old setting."""
    if n is None or device.type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class FitRun:
    """The state shared by the phases of one fit."""

    def __init__(
        self,
        df: pd.DataFrame,
        specs: list[ColumnSpec],
        *,
        target: str | None,
        delta: float,
        config: SynthesizerConfig,
        checkpoint: Checkpoint,
        progress: Callable[[ProgressEvent], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        cfg = self.config = config
        self.df, self.specs, self.ckpt = df, specs, checkpoint
        self.progress, self.should_stop = progress, should_stop
        resumed = checkpoint.load()
        if resumed is None:
            ledger = new_ledger(specs, config=cfg, delta=delta)
            plan = make_plan(specs, target=target, rows=len(df), config=cfg, ledger=ledger)
            self.state = FitState(ledger=ledger, plan=plan)
        else:
            self.state = resumed
        self.ledger, self.plan = self.state.ledger, self.state.plan
        self.noise = PrivacyNoise(secure_mode=cfg.secure_mode, noise_seed=cfg.noise_seed)
        self.device = resolve_device(cfg.device)
        seed = cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        self.rng = torch.Generator().manual_seed(seed)
        self.total_steps = cfg.generator_steps + (self.plan.dpsgd.steps if self.plan.dpsgd else 0)

    def report(self, phase: Phase, step: int, *, epoch: float = 0.0, epsilon: float | None = None) -> None:
        """Send a progress event (epsilon from the ledger unless given)."""
        if self.progress is not None:
            eps = self.ledger.epsilon_spent() if epsilon is None else epsilon
            self.progress(ProgressEvent(phase, step, self.total_steps, epoch, eps))

    def run(self) -> tuple[TableEncoder, Generator]:
        """All phases not yet in the checkpoint; returns the encoder and the fitted generator.

        Raises:
            FitCancelledError: ``should_stop`` said so; its ``epsilon_spent`` is what ran.
        """
        try:
            with torch_threads(self.config.cpu_threads, self.device):
                return self._run()
        except FitCancelledError as exc:
            exc.epsilon_spent = self.ledger.epsilon_spent()
            raise

    def _run(self) -> tuple[TableEncoder, Generator]:
        if self.state.domains is None:
            self.measure()
        assert self.state.domains is not None and self.state.marginals is not None
        encoder = TableEncoder(self.state.domains)
        with seeded_init(self.rng):
            gen = Generator(
                latent_dim=self.config.latent_dim,
                hidden=self.config.hidden,
                spans=encoder.spans,
                n_codes=self.config.n_codes,
                rng=self.rng,
            ).to(self.device)
        dims = [s.dim for s in encoder.spans]
        loss_fn = MarginalLoss(self.state.marginals, estimated_rows(self.state.marginals), dims, self.device)
        if self.state.generator is not None:
            gen.load_state_dict(self.state.generator)
        else:
            self._fit_generator(gen, loss_fn)
        if self.plan.dpsgd is not None and (self.state.gan is None or self._gan_steps_left()):
            self._dp_gan(gen, encoder, loss_fn)
        # The last event keeps the DP-SGD epochs run, so a finished job does not read "epoch 0".
        dpsgd = self.plan.dpsgd
        self.report("done", self.total_steps, epoch=dpsgd.steps * dpsgd.sample_rate if dpsgd else 0.0)
        return encoder, gen

    def _check_stop(self, where: str) -> None:
        if self.should_stop is not None and self.should_stop():
            raise FitCancelledError(f"fit cancelled {where}", epsilon_spent=self.ledger.epsilon_spent())

    def measure(self) -> None:
        """Run the full-table mechanisms (domains, marginals) into ``state`` and the checkpoint."""
        self.report("measure", 0, epsilon=0.0)
        domains = discover_domains(
            self.df, self.specs, self.plan, ledger=self.ledger, noise=self.noise, should_stop=self.should_stop
        )
        encoder = TableEncoder(domains)
        marginals = measure_marginals(
            encoder.encode(self.df),
            encoder,
            self.plan,
            ledger=self.ledger,
            noise=self.noise,
            max_pair_groups=self.config.max_pair_groups,
            should_stop=self.should_stop,
        )
        self.state = self.ckpt.save_measured(
            ledger=self.ledger, plan=self.plan, domains=domains, marginals=marginals
        )

    def _fit_generator(self, gen: Generator, loss_fn: MarginalLoss) -> None:
        eps = self.ledger.epsilon_spent()

        def on_step(step: int) -> None:
            if step % 25 == 0:
                self._check_stop("while fitting the generator")
            if step % 50 == 0:
                self.report("generator", step, epsilon=eps)

        fit_generator(
            gen,
            loss_fn,
            steps=self.config.generator_steps,
            lr=_GENERATOR_LR,
            stop_loss=_STOP_LOSS,
            on_step=on_step,
        )
        self.ckpt.save_generator(self.state, gen.state_dict())

    def _gan_steps_left(self) -> bool:
        assert self.plan.dpsgd is not None and self.state.gan is not None
        return int(self.state.gan["steps_done"]) < self.plan.dpsgd.steps

    def _dp_gan(self, gen: Generator, encoder: TableEncoder, loss_fn: MarginalLoss) -> None:
        params = self.plan.dpsgd
        assert params is not None
        tokens = torch.as_tensor(encoder.encode(self.df))
        parts = [torch.nn.functional.one_hot(tokens[:, j], s.dim) for j, s in enumerate(encoder.spans)]
        real = torch.cat(parts, dim=1).float().to(self.device)
        every = max(params.steps // 20, 1)

        def on_step(done: int) -> None:
            if done % every == 0 or done == params.steps:
                self.report("dp-gan", self.config.generator_steps + done, epoch=done * params.sample_rate)

        def checkpoint(gan_state: dict) -> None:
            self.ckpt.save_gan(self.state, gen.state_dict(), gan_state)

        gan_state = train_dp_gan(
            gen,
            real,
            loss_fn,
            params=params,
            ledger=self.ledger,
            noise=self.noise,
            rng=self.rng,
            hidden=self.config.hidden,
            on_step=on_step,
            should_stop=self.should_stop,
            state=self.state.gan,
            on_checkpoint=checkpoint,
            checkpoint_every=every,
        )
        checkpoint(gan_state)
        if gan_state["steps_done"] < params.steps:
            raise FitCancelledError(
                "fit cancelled during the DP-GAN phase", epsilon_spent=self.ledger.epsilon_spent()
            )
