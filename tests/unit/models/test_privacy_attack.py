"""A membership-inference attack on a planted outlier stays near chance at small epsilon.

If any preprocessing step used raw statistics (min/max, raw category lists), the outlier
would widen the released domain and the attack would separate the worlds perfectly.
"""

import numpy as np
from sklearn.metrics import roc_auc_score

from models import Synthesizer
from tests.conftest import make_table

OUTLIER = {"age": 90, "income": 5e6, "smoker": "yes", "region": "west", "children": 9, "outcome": "yes"}


def _score(with_outlier: bool, seed: int) -> float:
    df = make_table(600, seed=100 + seed)
    if with_outlier:
        df.loc[0] = OUTLIER
    synth = Synthesizer(epsilon=0.5, seed=seed, noise_seed=1000 + seed, generator_steps=100).fit(df)
    syn = synth.sample(3000, random_state=seed)
    # Attacker's score: how close the nearest synthetic income comes to the outlier's.
    return float(-np.abs(np.log(syn["income"].astype(float).clip(lower=1)) - np.log(OUTLIER["income"])).min())


def test_membership_attack_on_planted_outlier_is_near_chance():
    runs = 8
    scores = [_score(True, s) for s in range(runs)] + [_score(False, s) for s in range(runs)]
    labels = [1] * runs + [0] * runs
    auc = roc_auc_score(labels, scores)
    assert auc <= 0.8, f"membership AUC {auc:.2f} on the planted outlier: the outlier leaks"
