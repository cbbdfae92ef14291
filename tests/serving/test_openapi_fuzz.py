"""Schemathesis over the app's own OpenAPI schema, against a real uvicorn server: whatever the
generated requests (valid and invalid bodies, paths, headers), no answer is a server error, and
every error is the documented JSON body."""

import itertools
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.serving.conftest import ServerFactory

# A bounded run for the default suite; `make test-slow` runs the long variant.
EXAMPLES = 15


def fuzz(server_url: str, examples: int) -> int:
    """Every operation of the schema, `examples` generated cases each; returns the calls made."""
    schema = schemathesis.openapi.from_url(server_url + "/openapi.json")
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    # Valid requests, and requests that break the schema on purpose (wrong types, missing
    # fields, out-of-range values): both must get a 2xx/4xx answer, never a 500.
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def call(case: Any) -> None:
            nonlocal calls
            calls += 1
            check(case.call(base_url=server_url, timeout=30))

        try:
            call()
        except Unsatisfiable:
            # Nothing to get wrong on purpose (an operation without parameters or body).
            assert mode is GenerationMode.NEGATIVE
    return calls


def check(response: Any) -> None:
    # 502/503 are the documented answers for a failing generator or an index not served yet.
    assert response.status_code < 500 or response.status_code in (502, 503), response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"]
        assert error["code"]
        assert "Traceback" not in response.text


def test_no_generated_request_gets_a_server_error(serve: ServerFactory) -> None:
    server = serve(rate_limit_per_minute=1_000_000)
    assert fuzz(server.url, EXAMPLES) >= 2 * 8 * 5  # every operation got cases of both kinds


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error_long(serve: ServerFactory) -> None:
    server = serve(rate_limit_per_minute=1_000_000)
    fuzz(server.url, 300)
