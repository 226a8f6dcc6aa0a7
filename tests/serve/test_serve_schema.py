"""Property-based run of the live server's own OpenAPI schema (schemathesis): whatever request it generates for
each operation, the answer is never a 5xx. Skipped when schemathesis is not installed."""
from __future__ import annotations

import pytest

from serve_support import index_dir, model_dir, serve_data  # noqa: F401 - fixtures
from test_serve_live import live_server  # noqa: F401 - fixture

schemathesis = pytest.importorskip("schemathesis")


def test_no_generated_request_gets_a_server_error(live_server):
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    schema = schemathesis.openapi.from_url(live_server + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def no_server_error(case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        no_server_error()
