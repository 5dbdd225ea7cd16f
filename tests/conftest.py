"""Shared test data: small mixed tables made here, never downloaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def make_table(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """A correlated table with every column kind the engine handles."""
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(45, 13, n), 18, 90).round().astype(int)
    smoker = rng.random(n) < 0.25
    region = rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1])
    income = np.exp(rng.normal(10 + 0.01 * (age - 45), 0.5, n)).round(2)
    risk = 1 / (1 + np.exp(-(-2.5 + 0.08 * (age - 45) + 2.5 * smoker)))
    outcome = np.where(rng.random(n) < risk, "yes", "no")
    children = rng.poisson(1.2, n)
    return pd.DataFrame(
        {
            "age": age,
            "income": income,
            "smoker": np.where(smoker, "yes", "no"),
            "region": region,
            "children": children,
            "outcome": outcome,
        }
    )


@pytest.fixture(scope="session")
def table() -> pd.DataFrame:
    return make_table()


# Few generator steps keep fits around a second; quality is checked in bench/, not here.
FAST = {"generator_steps": 150, "noise_seed": 1}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests last.

    Playwright's sync API runs on greenlets and leaves an event loop marked running, which
    skews CPython 3.11's recursion accounting (``ast.parse`` then fails with "recursion
    depth mismatch", as Hypothesis calls it) and breaks ``asyncio.run`` in later tests.
    """
    items.sort(key=lambda item: "tests/browser/" in item.nodeid.replace("\\", "/"))
