"""Randomness for privacy noise, kept apart from every other random choice.

The ``seed`` a user passes makes model initialisation and sampling reproducible and is
recorded in the certificate. Privacy noise and Poisson sampling must not be derivable
from anything published, so they come from this source: fresh OS entropy by default,
a CSPRNG in secure mode, or a fixed ``noise_seed`` for tests and benchmarks only (the
certificate then says so, because whoever knows it can subtract the noise).
"""

from __future__ import annotations

import importlib.util
import os

import torch

from models.errors import SecureModeUnavailableError


def secure_rng_available() -> bool:
    """Whether Opacus' secure mode can run (it needs the ``torchcsprng`` package)."""
    return importlib.util.find_spec("torchcsprng") is not None


class PrivacyNoise:
    """A ``torch.Generator`` for Gaussian noise and Poisson sampling.

    Args:
        secure_mode: draw from ``/dev/urandom`` through torchcsprng (Opacus' secure mode).
        noise_seed: fix the noise (tests and benchmarks only; voids the guarantee if known).

    Raises:
        SecureModeUnavailableError: secure mode was asked for and torchcsprng is missing,
            or a noise seed was combined with secure mode.
    """

    def __init__(self, *, secure_mode: bool = False, noise_seed: int | None = None) -> None:
        self.secure_mode = secure_mode
        self.seeded = noise_seed is not None
        if secure_mode:
            if noise_seed is not None:
                raise SecureModeUnavailableError("secure_mode=True cannot be combined with a noise_seed")
            if not secure_rng_available():
                raise SecureModeUnavailableError(
                    "secure_mode=True needs a cryptographically secure RNG, but the torchcsprng "
                    "package is not installed; install a torchcsprng build matching your torch, "
                    "or run with secure_mode=False"
                )
            import torchcsprng  # type: ignore[import-not-found]

            self.generator = torchcsprng.create_random_device_generator("/dev/urandom")
        else:
            seed = noise_seed if noise_seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            self.generator = torch.Generator().manual_seed(seed)

    def gaussian(self, shape: tuple[int, ...] | int, std: float) -> torch.Tensor:
        """Float64 Gaussian noise with standard deviation ``std`` on the CPU."""
        size = (shape,) if isinstance(shape, int) else shape
        return torch.normal(0.0, std, size=size, generator=self.generator, dtype=torch.float64)
