"""Generator and discriminator networks.

The discriminator is the only network that sees real rows, so it has no layer that
mixes rows of a batch (no BatchNorm, no minibatch discrimination); Opacus'
``ModuleValidator`` checks it strictly before training. The generator only sees noise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from opacus.validators import ModuleValidator
from torch import nn

from models.errors import DPCompatibilityError
from models.transform import SpanInfo


@contextlib.contextmanager
def seeded_init(rng: torch.Generator) -> Iterator[None]:
    """Initialise layers from ``rng`` without changing torch's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=rng)))
        yield


class Generator(nn.Module):
    """A fixed bank of noise codes -> one softmax per column (the encoder's spans).

    The model is the uniform mixture, over the bank, of product distributions. A fixed
    bank (public noise, saved with the weights) makes the marginal fit a deterministic,
    full-batch problem; on public tables it fitted 2-way marginals clearly better than
    fresh noise every step (bench/README.md).
    """

    def __init__(
        self, *, latent_dim: int, hidden: int, spans: list[SpanInfo], n_codes: int, rng: torch.Generator
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.spans = spans
        self.register_buffer("codes", torch.randn(n_codes, latent_dim, generator=rng))
        out = sum(s.dim for s in spans)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Concatenated logits of all spans."""
        return self.net(z)

    def split(self, logits: torch.Tensor) -> list[torch.Tensor]:
        """Per-column slices of ``logits``."""
        return list(torch.split(logits, [s.dim for s in self.spans], dim=1))

    def probs(self, z: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Per-column token probabilities for codes ``z`` (default: the whole bank)."""
        return [torch.softmax(x, dim=1) for x in self.split(self(self.codes if z is None else z))]

    def pick(self, n: int, rng: torch.Generator) -> torch.Tensor:
        """``n`` codes drawn uniformly from the bank."""
        return self.codes[torch.randint(0, len(self.codes), (n,), generator=rng).to(self.codes.device)]

    def one_hot_sample(self, z: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Rows drawn as one-hot tokens (straight-through Gumbel-max, so gradients flow).

        Gumbel noise comes from ``rng``: torch's own gumbel_softmax would draw from the
        global RNG.
        """
        logits = self(z)
        u = torch.rand(logits.shape, generator=rng).to(logits.device).clamp_(1e-10, 1 - 1e-10)
        noisy = logits - torch.log(-torch.log(u))
        parts = []
        for x in self.split(noisy):
            soft = torch.softmax(x, dim=1)
            hard = nn.functional.one_hot(x.argmax(dim=1), x.shape[1]).to(soft.dtype)
            parts.append(hard - soft.detach() + soft)
        return torch.cat(parts, dim=1)


class Discriminator(nn.Module):
    """One-hot row -> logit that it is real; per-row layers only."""

    def __init__(self, *, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch,)."""
        return self.net(x).squeeze(1)


def validate_dp_module(module: nn.Module) -> None:
    """Raise once with every reason ``module`` cannot be trained with DP-SGD.

    Raises:
        DPCompatibilityError: e.g. it holds BatchNorm, which mixes rows of a batch.
    """
    errors = ModuleValidator.validate(module, strict=False)
    if errors:
        listed = "; ".join(str(e) for e in errors)
        raise DPCompatibilityError(f"{type(module).__name__} cannot be trained with DP-SGD: {listed}")
