"""Fit the generator to DP-measured marginals (post-processing: no raw row is read).

The generator defines a mixture of product distributions (one per noise draw). For a
batch of draws, its expected 1-way and 2-way marginals are averages of softmax outputs
and their outer products, which are differentiable. The loss is the Gaussian negative
log-likelihood of the noisy counts: squared error over each count's noise variance, so
precise measurements weigh more than noisy ones.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models.marginals import Marginal
from models.networks import Generator


class MarginalLoss:
    """Weighted squared error between a generator's marginals and the noisy counts.

    All marginals are computed at once: the 1-way ones are the mean of the concatenated
    per-column probabilities, the 2-way ones are blocks of one Gram matrix of the
    grouped probabilities. A few large tensor ops per step instead of hundreds of tiny
    ones keeps a step around a millisecond on a laptop CPU.
    """

    def __init__(
        self, marginals: list[Marginal], n_hat: float, dims: list[int], device: torch.device
    ) -> None:
        offsets = np.concatenate([[0], np.cumsum(dims)])
        pair_maps: dict[int, np.ndarray] = {}
        for m in marginals:
            for c, mapping in zip(m.columns, m.maps, strict=True):
                if len(m.columns) == 2 and not np.array_equal(pair_maps.setdefault(c, mapping), mapping):
                    raise ValueError(f"column {c} is grouped two ways in 2-way marginals")
        group_sizes = [int(pair_maps[c].max()) + 1 if c in pair_maps else 0 for c in range(len(dims))]
        goffsets = np.concatenate([[0], np.cumsum(group_sizes)])
        grouping = torch.zeros(int(offsets[-1]), int(goffsets[-1]))
        for c, mapping in pair_maps.items():
            grouping[offsets[c] + np.arange(len(mapping)), goffsets[c] + mapping] = 1.0
        idx1, y1, w1, rows2, cols2, y2, w2 = [], [], [], [], [], [], []
        for m in marginals:
            y, w = m.counts / n_hat, n_hat**2 / m.variance
            if len(m.columns) == 1:
                (c,) = m.columns
                idx1.append(offsets[c] + np.arange(len(m.counts)))
                y1.append(y), w1.append(w)
            else:
                a, b = m.columns
                ga, gb = m.shape
                ii, jj = np.divmod(np.arange(ga * gb), gb)
                rows2.append(goffsets[a] + ii), cols2.append(goffsets[b] + jj)
                y2.append(y), w2.append(w)

        def cat(parts: list[np.ndarray], dtype: torch.dtype = torch.float32) -> torch.Tensor:
            joined = np.concatenate(parts) if parts else np.zeros(0)
            return torch.as_tensor(joined, dtype=dtype, device=device)

        self.grouping = grouping.to(device)
        self.idx1, self.y1, self.w1 = cat(idx1, torch.long), cat(y1), cat(w1)
        self.rows2, self.cols2, self.y2, self.w2 = (
            cat(rows2, torch.long),
            cat(cols2, torch.long),
            cat(y2),
            cat(w2),
        )
        self.cells = max(len(self.y1) + len(self.y2), 1)

    def __call__(self, probs: list[torch.Tensor]) -> torch.Tensor:
        """Mean weighted squared error per measured cell."""
        p = torch.cat(probs, dim=1)
        loss = (self.w1 * (p.mean(0)[self.idx1] - self.y1) ** 2).sum()
        if len(self.y2):
            q = p @ self.grouping
            gram = q.T @ q / len(p)
            loss = loss + (self.w2 * (gram[self.rows2, self.cols2] - self.y2) ** 2).sum()
        return loss / self.cells


def fit_generator(
    gen: Generator,
    loss_fn: MarginalLoss,
    *,
    steps: int,
    lr: float,
    stop_loss: float = 0.0,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """Full-batch Adam on the marginal loss over the generator's code bank; returns the last loss.

    Stops early once the loss (mean squared error per cell in units of its noise variance)
    is at most ``stop_loss``: fitting closer than the noise only fits the noise (the
    discrepancy principle). Post-processing only: it reads the noisy marginals, never a row.
    """
    opt = torch.optim.Adam(gen.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr / 10)
    loss = torch.zeros(())
    for step in range(steps):
        loss = loss_fn(gen.probs())
        if loss.item() <= stop_loss:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step)
    return float(loss.detach())
