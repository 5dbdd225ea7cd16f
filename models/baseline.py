"""The baseline every DP synthesizer must beat: columns drawn independently from DP 1-way marginals.

Same domain discovery, same budget accounting, same decoding as ``Synthesizer``, but no
2-way marginal and no generator: each column is sampled on its own from its noisy
1-way histogram (negative counts clipped to zero).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from models.config import SynthesizerConfig, check_delta, default_delta
from models.marginals import UNMEASURED, Marginal
from models.measure import discover_domains, estimated_rows, measure_marginals
from models.noise import PrivacyNoise
from models.plan import make_plan, new_ledger
from models.schema import Schema, infer_schema
from models.transform import TableEncoder


class IndependentMarginals:
    """Fit DP 1-way marginals at ``epsilon``; sample columns independently.

    Args:
        epsilon: target epsilon, domain discovery included.
        delta: target delta (default as in ``Synthesizer``).
        schema: optional declared schema.
        noise_seed: fix the privacy noise (benchmarks and tests only).
    """

    def __init__(
        self,
        *,
        epsilon: float = 1.0,
        delta: float | None = None,
        schema: Schema | None = None,
        noise_seed: int | None = None,
    ) -> None:
        self.epsilon = epsilon
        self.delta = delta
        self.schema = schema
        self.noise_seed = noise_seed

    def fit(self, df: pd.DataFrame) -> IndependentMarginals:
        """Measure domains and 1-way marginals; returns ``self``."""
        config = SynthesizerConfig(epsilon=self.epsilon, delta=self.delta, noise_seed=self.noise_seed)
        schema = infer_schema(df, self.schema)
        specs = schema.kept
        delta = self.delta if self.delta is not None else default_delta(len(df))
        check_delta(delta, len(df))
        self.ledger_ = new_ledger(specs, config=config, delta=delta)
        plan = make_plan(
            specs, target=None, rows=len(df), config=config, ledger=self.ledger_, with_pairs=False
        )
        noise = PrivacyNoise(noise_seed=self.noise_seed)
        domains = discover_domains(df, specs, plan, ledger=self.ledger_, noise=noise)
        self.encoder_ = TableEncoder(domains)
        one_way: list[Marginal] = measure_marginals(
            self.encoder_.encode(df),
            self.encoder_,
            plan,
            ledger=self.ledger_,
            noise=noise,
            max_pair_groups=None,
        )
        n_hat = estimated_rows(one_way)
        self.probs_ = []
        for m in one_way:
            # An unmeasured "other" cell gets whatever mass the measured cells leave.
            unmeasured = m.variance >= UNMEASURED
            counts = np.where(unmeasured, max(n_hat - m.counts[~unmeasured].sum(), 0.0), m.counts)
            mass = np.clip(counts, 0, None)
            self.probs_.append(mass / mass.sum() if mass.sum() > 0 else np.full(len(mass), 1 / len(mass)))
        return self

    def sample(self, n: int, *, random_state: int | None = None) -> pd.DataFrame:
        """``n`` rows, each column drawn independently."""
        rng = np.random.default_rng(random_state)
        tokens = np.stack([rng.choice(len(p), size=n, p=p) for p in self.probs_], axis=1)
        return self.encoder_.decode(tokens, rng)
