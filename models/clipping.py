"""Per-sample clipped gradient sums in one backward pass ("book-keeping" clipping).

For a Linear layer applied once to a batch, sample i's weight gradient is the outer
product g_i a_i^T of its output gradient and its input, so its squared norm is
|g_i|^2 |a_i|^2 (plus |g_i|^2 for the bias), and the clipped sum over the batch is
(c * G)^T A with c_i = min(1, C / |grad_i|). One backward pass to the layer outputs gives
every g_i; the clipped sums then cost one matmul per layer, like a plain backward. This
is the book-keeping technique of Bu et al. (2023); Opacus' ghost clipping computes the
same norms but pays a second backward pass. Noise, scaling, Poisson sampling and
accounting stay Opacus'. Only networks made of Linear layers and parameter-free layers
qualify; anything else is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from models.errors import DPCompatibilityError


class BookKeepingClipper:
    """Writes the per-sample-clipped gradient *sum* of ``module``'s parameters into ``.grad``."""

    def __init__(self, module: nn.Module, *, max_grad_norm: float) -> None:
        self.layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
        linear_params = {id(p) for layer in self.layers for p in layer.parameters()}
        others = [name for name, p in module.named_parameters() if id(p) not in linear_params]
        if others:
            raise DPCompatibilityError(
                f"book-keeping clipping handles Linear layers only; parameters {others} are not in one"
            )
        self.max_grad_norm = max_grad_norm
        self._recording = False
        self._seen: dict[nn.Linear, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer in self.layers:
            layer.register_forward_hook(self._remember)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Forward passes inside this block are the ones ``backward`` clips.

        Forward passes elsewhere (e.g. the generator's step through the discriminator) are
        ignored.
        """
        self._recording, self._seen = True, {}
        try:
            yield
        finally:
            self._recording = False

    def _remember(self, layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not self._recording:
            return
        if layer in self._seen:
            raise DPCompatibilityError(
                "a Linear layer ran twice in one forward pass; per-sample norms would be wrong"
            )
        if inputs[0].dim() != 2:
            raise DPCompatibilityError("book-keeping clipping expects (batch, features) inputs")
        self._seen[layer] = (inputs[0].detach(), output)  # type: ignore[index]

    def backward(self, per_sample_loss: torch.Tensor) -> torch.Tensor:
        """Set each parameter's ``.grad`` to the clipped sum; returns the unclipped per-sample norms."""
        seen, self._seen = self._seen, {}
        if set(seen) != set(self.layers):
            raise DPCompatibilityError("every Linear layer must run exactly once before backward")
        grads = torch.autograd.grad(per_sample_loss.sum(), [seen[layer][1] for layer in self.layers])
        norms2 = torch.stack(
            [
                (g * g).sum(1) * ((a * a).sum(1) + (1.0 if layer.bias is not None else 0.0))
                for layer, g in zip(self.layers, grads, strict=True)
                for a in [seen[layer][0]]
            ]
        ).sum(0)
        norms = norms2.sqrt()
        scale = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for layer, g in zip(self.layers, grads, strict=True):
            scaled = g * scale[:, None]
            layer.weight.grad = scaled.T @ seen[layer][0]
            if layer.bias is not None:
                layer.bias.grad = scaled.sum(0)
        return norms
