"""Schemathesis against the live server's OpenAPI: no 5xx for any endpoint or input."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(srv):
    # A known workload, so some generated cases reach the query code, not just the 404.
    srv.post("/wandb/metrics", {"workload_uid": "fuzz", "metrics": [{"name": "loss", "value": 1.0, "step": 1}]})
    return schemathesis.openapi.from_url(srv.url + "/api/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case, srv):
    case.call_and_validate(base_url=srv.url, checks=[not_a_server_error])
