import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service.api.errors import overloaded


def test_a_pool_timeout_is_a_503_with_retry_after():
    with ThreadPoolExecutor(1) as pool:  # a loop of its own, whatever this thread runs
        response = pool.submit(asyncio.run, overloaded(None, PoolTimeoutError("pool limit"))).result()  # type: ignore[arg-type]
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert "overloaded" in json.loads(response.body)["detail"]
