"""Schemathesis against the live API: no request, valid or not, gets a 5xx, on any operation.

Every operation in the served OpenAPI is fuzzed (positive and negative cases) with a key of a
role that may call it, so requests get past the role check into the route. About half of the
cases aim at objects that exist (a dataset with a budget, a job, a release, a spare key), so the
routes' own validation is exercised too, not only their 404.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from service.api.main import create_app
from tests.integration.helpers import dataset_with_budget, upload
from tests.integration.live import LiveService, live_service, service_settings
from tests.integration.test_api_access import key_id, make_release


@schemathesis.serializer("application/vnd.apache.parquet")
def _parquet(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """Generated binary bodies go out as they are (a Parquet reader must cope with any bytes)."""
    if isinstance(value, bytes):
        return value
    data = getattr(value, "data", None)  # schemathesis' Binary wrapper
    return data if isinstance(data, bytes) else str(value).encode()


@dataclass
class Target:
    service: LiveService
    tokens: dict[str, str]
    ids: dict[str, str]

    def token_for(self, path: str) -> str:
        """A key of a role that may call ``path`` (see test_api_access's matrix)."""
        if path.startswith("/keys"):
            return self.tokens["admin"]
        if path.startswith("/audit"):
            return self.tokens["auditor"]
        return self.tokens["custodian"]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with live_service(service_settings(tmp_path_factory.mktemp("fuzz") / "data")) as service:
        tokens = {role: service.key(role) for role in ("custodian", "auditor", "admin")}
        with service.client(tokens["custodian"]) as client:
            dataset_id = dataset_with_budget(client, epsilon=1000.0, delta=0.1)
            release_id = make_release(service, client, dataset_id)
            job = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.1, "rows": 5})
            batch = client.post(
                "/batches", json={"jobs": [{"dataset_id": dataset_id, "epsilon": 0.1, "rows": 5}]}
            )
        ids = {
            "dataset_id": dataset_id,
            "job_id": job.json()["id"],
            "release_id": release_id,
            "key_id": key_id(service.key("analyst")),  # revoking it locks no one out
            "batch_id": batch.json()["id"],
        }
        yield Target(service=service, tokens=tokens, ids=ids)


# The OpenAPI of the app as the live service builds it; the first test checks it is the one
# the service serves. (schemathesis' lazy ``from_fixture`` does not run on pytest 9, whose test
# items have no ``_nodeid``; a schema known at collection also gives one test per operation.)
SPEC = create_app(service_settings(Path(tempfile.gettempdir()) / "dpsynth-unused")).openapi()
schema = schemathesis.openapi.from_dict(SPEC)


def test_the_fuzzed_schema_is_the_one_the_service_serves(target: Target) -> None:
    with target.service.client() as client:
        assert client.get("/openapi.json").json() == SPEC


# Each example is a real HTTP round trip, so there are no deadlines (no timing asserts) and no
# health checks about speed; database=None keeps Hypothesis from saving examples in the repo.
# No operation is excluded.
@schema.parametrize()
@schema.given(aim=st.booleans())
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_operation_answers_with_a_server_error(case: Any, aim: bool, target: Target) -> None:
    if aim:
        for name in case.path_parameters or {}:
            case.path_parameters[name] = target.ids[name]
        if isinstance(case.body, dict) and "dataset_id" in case.body:
            case.body["dataset_id"] = target.ids["dataset_id"]
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "x-api-key"}
    case.headers = {**headers, "X-API-Key": target.token_for(case.operation.path)}
    response = case.call(base_url=target.service.url)
    case.validate_response(response, checks=[not_a_server_error])


# Schemathesis cannot write a table that parses, so it only reaches the upload's refusals;
# generated tables also reach the parser's and the kind inference's success paths.
CELLS = {
    "int": st.integers(-(2**70), 2**70),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "bool": st.booleans(),
    "text": st.text(max_size=12),
    "time": st.datetimes(),
}


@st.composite
def tables(draw: st.DrawFn) -> pd.DataFrame:
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True))
    rows = draw(st.integers(0, 30))
    columns = {}
    for name in names:
        kind = draw(st.sampled_from([*CELLS, "mixed"]))
        cells = st.one_of(*CELLS.values()) if kind == "mixed" else CELLS[kind]
        columns[name] = draw(st.lists(st.one_of(st.none(), cells), min_size=rows, max_size=rows))
    return pd.DataFrame(columns)


def _as_file(table: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return table.to_csv(index=False).encode("utf-8", errors="surrogatepass")
    out = io.BytesIO()
    try:
        table.to_parquet(out, index=False)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return b""  # a table pyarrow cannot write is an empty upload
    return out.getvalue()


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(table=tables(), fmt=st.sampled_from(["csv", "parquet"]))
def test_generated_tables_are_accepted_or_refused_never_a_server_error(
    target: Target, table: pd.DataFrame, fmt: str
) -> None:
    with target.service.client(target.tokens["custodian"]) as client:
        response = upload(client, _as_file(table, fmt), fmt=fmt)
    assert response.status_code in (201, 422), response.text


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(alphabet=st.sampled_from(list('ab1.-e ,;"\n\r\t\x00é')) | st.characters(), max_size=300))
def test_arbitrary_text_as_csv_is_accepted_or_refused_never_a_server_error(target: Target, text: str) -> None:
    with target.service.client(target.tokens["custodian"]) as client:
        response = upload(client, text.encode("utf-8", errors="surrogatepass"), fmt="csv")
    assert response.status_code in (201, 422), response.text
