"""``Synthesizer``: fit a DP generator to a table, sample any number of rows from it.

Only the measurement phases and the DP-SGD discriminator read raw rows (see
``training.py``); everything a fitted synthesizer holds is public or DP output, and its
model file is weights plus JSON, loaded without pickle.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from models.certificate import build_certificate
from models.checkpoint import Checkpoint
from models.config import SynthesizerConfig, check_delta, default_delta
from models.errors import FitCancelledError, NotFittedError, SchemaError
from models.networks import Generator, seeded_init
from models.persist import domain_from_dict, domain_to_dict
from models.schema import Schema, infer_schema
from models.training import FitRun, ProgressEvent, resolve_device
from models.transform import TableEncoder

MODEL_FORMAT = "dpsynth-model/2"


def table_sha256(df: pd.DataFrame) -> str:
    """SHA-256 of the table's canonical CSV form (callers with a file pass its own hash)."""
    return hashlib.sha256(df.to_csv(index=False).encode("utf-8")).hexdigest()


class Synthesizer:
    """A differentially private synthesizer for one table.

    Args:
        epsilon: target epsilon of the whole release, domain discovery included.
        delta: target delta; ``None`` picks a power of ten <= 1/(10 n).
        schema: a ``Schema``, a JSON schema dict, or a path to a JSON schema file.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: seeds everything except the privacy noise.
        **options: further ``SynthesizerConfig`` fields.
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        delta: float | None = None,
        schema: Schema | dict[str, Any] | str | Path | None = None,
        device: str = "auto",
        seed: int | None = None,
        **options: Any,
    ) -> None:
        self.epsilon = epsilon
        self.delta = delta
        self.schema = schema
        self.device = device
        self.seed = seed
        self.options = options
        self.config = SynthesizerConfig(epsilon=epsilon, delta=delta, device=device, seed=seed, **options)  # type: ignore[arg-type]

    def fit(
        self,
        df: pd.DataFrame,
        *,
        progress: Callable[[ProgressEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint_path: str | Path | None = None,
        input_sha256: str | None = None,
    ) -> Synthesizer:
        """Fit on ``df``; returns ``self``.

        Args:
            df: the table; columns not in the schema get kinds inferred from dtypes.
            progress: called with a ``ProgressEvent`` as the fit advances.
            should_stop: polled between steps; True cancels the fit.
            checkpoint_path: where to checkpoint; an existing checkpoint for the same input
                and settings is resumed, charges included.
            input_sha256: the input file's hash for the certificate (default: of ``df``).

        Raises:
            SchemaError, PrivacyParameterError: invalid input, before any budget is spent.
            BudgetExceededError: the plan does not fit the target, before any budget is spent.
            FitCancelledError: ``should_stop`` returned True; what ran stays spent and
                ``certificate`` records it.
        """
        declared = self.schema if isinstance(self.schema, Schema | None) else Schema.from_json(self.schema)
        _validate_table(df)
        schema = infer_schema(df, declared)
        specs = schema.kept
        if not specs:
            raise SchemaError("every column is an identifier or free text; nothing to synthesize")
        delta = self.config.delta if self.config.delta is not None else default_delta(len(df))
        check_delta(delta, len(df))
        sha = input_sha256 or table_sha256(df)
        run = FitRun(
            df,
            specs,
            target=schema.target,
            delta=delta,
            config=self.config,
            checkpoint=Checkpoint(checkpoint_path, input_sha256=sha, config=self.config),
            progress=progress,
            should_stop=should_stop,
        )

        def certificate(completed: bool) -> dict[str, Any]:
            return build_certificate(
                ledger=run.ledger,
                config=self.config,
                schema=schema,
                domains=run.state.domains or [],
                input_sha256=sha,
                rows=len(df),
                row_count_public=self.config.delta is None or run.plan.dpsgd is not None,
                completed=completed,
            )

        try:
            self.encoder_, self.generator_ = run.run()
        except FitCancelledError:
            self.certificate_ = certificate(False)
            raise
        self.domains_ = self.encoder_.domains
        self.certificate_ = certificate(True)
        return self

    @property
    def certificate(self) -> dict[str, Any]:
        """The privacy certificate of the fit (a JSON-able dict)."""
        if not hasattr(self, "certificate_"):
            raise NotFittedError("this Synthesizer is not fitted; call fit(df) or Synthesizer.load(path)")
        return self.certificate_

    def _check_fitted(self) -> None:
        if not hasattr(self, "generator_"):
            raise NotFittedError("this Synthesizer is not fitted; call fit(df) or Synthesizer.load(path)")

    def sample(self, n: int, *, random_state: int | None = None, batch_size: int = 100_000) -> pd.DataFrame:
        """Draw ``n`` synthetic rows. Post-processing: costs no budget, any ``n`` works."""
        self._check_fitted()
        if not (isinstance(n, int | np.integer) and n >= 0):
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        np_rng = np.random.default_rng(random_state if random_state is not None else self.config.seed)
        torch_rng = torch.Generator().manual_seed(int(np_rng.integers(0, 2**62)))
        parts = []
        with torch.no_grad():
            for start in range(0, n, batch_size):
                probs = self.generator_.probs(self.generator_.pick(min(batch_size, n - start), torch_rng))
                tokens = np.stack([_draw(p.cpu().numpy(), np_rng) for p in probs], axis=1)
                parts.append(self.encoder_.decode(tokens, np_rng))
        if not parts:
            return self.encoder_.decode(np.zeros((0, len(self.encoder_.domains)), dtype=np.int64), np_rng)
        return pd.concat(parts, ignore_index=True)

    def save(self, path: str | Path) -> None:
        """Write the weights as safetensors with the JSON metadata in its header (no pickle, no raw rows)."""
        self._check_fitted()
        meta = {
            "format": MODEL_FORMAT,
            "config": self.config.to_dict(),
            "domains": [domain_to_dict(d) for d in self.domains_],
            "certificate": self.certificate_,
        }
        weights = {k: v.detach().cpu().contiguous() for k, v in self.generator_.state_dict().items()}
        save_file(weights, str(path), metadata={"dpsynth": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path, *, device: str = "auto") -> Synthesizer:
        """Load a model written by ``save``: plain tensors and JSON, nothing executable."""
        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata() or {}
                weights = {name: fh.get_tensor(name) for name in fh.keys()}
        except (SafetensorError, OSError) as exc:
            raise ValueError(f"{str(path)!r} is not a dpsynth model file: {exc}") from None
        meta = json.loads(header.get("dpsynth", "{}"))
        if meta.get("format") != MODEL_FORMAT:
            raise ValueError(f"{str(path)!r} is not a dpsynth model file")
        cfg = dict(meta["config"])
        cfg.pop("noise_seed", None)
        top = {k: cfg.pop(k) for k in ("epsilon", "delta", "seed")}
        cfg.pop("device")
        self = cls(**top, device=device, **cfg)
        self.domains_ = [domain_from_dict(d) for d in meta["domains"]]
        self.encoder_ = TableEncoder(self.domains_)
        rng = torch.Generator()
        with seeded_init(rng):  # weights are overwritten below; keep the global RNG untouched
            gen = Generator(
                latent_dim=self.config.latent_dim,
                hidden=self.config.hidden,
                spans=self.encoder_.spans,
                n_codes=len(weights["codes"]),
                rng=rng,
            )
        gen.load_state_dict(weights)
        self.generator_ = gen.to(resolve_device(device))
        self.certificate_ = meta["certificate"]
        return self


def _draw(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One token per row by inverse CDF."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((len(probs), 1)) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=1), probs.shape[1] - 1)


def _validate_table(df: pd.DataFrame) -> None:
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if df.shape[1] == 0:
        raise SchemaError("the table has no columns")
    if len(df) == 0:
        raise SchemaError("the table has no rows")
    dupes = df.columns[df.columns.duplicated()].tolist()
    if dupes:
        raise SchemaError(f"duplicate column names {dupes}; rename them")
