"""A build with the privacy noise switched off, for tests that must show an audit can fail.

Inside ``noise_off()`` every Gaussian the engine draws (domains, marginals) and Opacus'
DP-SGD noise are zero, while the accountant still charges the planned noise: exactly the
bug an empirical audit exists to catch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from opacus.optimizers import optimizer as opacus_optimizer
from opacus.optimizers import optimizer_fast_gradient_clipping as opacus_fast

from models.noise import PrivacyNoise


def _zero_gaussian(self: PrivacyNoise, shape: tuple[int, ...] | int, std: float) -> torch.Tensor:
    size = (shape,) if isinstance(shape, int) else shape
    return torch.zeros(size, dtype=torch.float64)


def _zero_dpsgd_noise(std: float, reference: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return torch.zeros_like(reference)


@contextlib.contextmanager
def noise_off(*, measurements: bool = True, dpsgd: bool = True) -> Iterator[None]:
    """Switch off the measurements' noise, DP-SGD's noise, or both."""
    with pytest.MonkeyPatch.context() as mp:
        if measurements:
            mp.setattr(PrivacyNoise, "gaussian", _zero_gaussian)
        if dpsgd:
            for module in (opacus_optimizer, opacus_fast):  # each imports the noise function
                mp.setattr(module, "_generate_noise", _zero_dpsgd_noise)
        yield
