"""The running API against its OpenAPI description, with schemathesis.

Schemathesis generates requests from services/api/wallet_api/openapi.yaml (valid ones,
and invalid ones for the negative phase) and checks every answer: no 5xx, only
documented status codes and content types, bodies that match the documented schemas.
Bounded and derandomized, so the run is the same on every machine and takes seconds.
Valid deposits really go to the module's broker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemathesis
import yaml
from api_http import get
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import wallet_api

pytestmark = pytest.mark.integration

SPEC = Path(wallet_api.__file__).with_name("openapi.yaml")
schema = schemathesis.openapi.from_path(str(SPEC))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
#: How long GET /details waits for a token's deposit in this module's API (the default is 5 s): generated
#: tokens are well-formed but mostly name deposits that do not exist, and each would wait that long.
CONSISTENCY_TIMEOUT = "0.3"


@pytest.fixture(scope="module")
def base_url(module_cluster) -> str:
    module_cluster.extra_env["WALLET_CONSISTENCY_TIMEOUT_SECONDS"] = CONSISTENCY_TIMEOUT
    module_cluster.start_all()
    return f"http://127.0.0.1:{module_cluster.services['api-0'].port}"


def _waited_for_a_token(case: schemathesis.Case, response: schemathesis.Response) -> bool:
    """GET /details with a token that never showed: the documented 503 (not a server fault)."""
    headers = {k.lower(): v for k, v in (case.headers or {}).items()}
    return (
        case.operation.label == "GET /details/{wallet_id}"
        and response.status_code == 503
        and ("token" in (case.query or {}) or "consistency-token" in headers)
    )


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)
def test_api_conforms_to_its_openapi_description(case: schemathesis.Case, base_url: str):
    response = case.call(base_url=base_url, timeout=15)
    if _waited_for_a_token(case, response):
        assert "not visible yet" in response.json()["error"], response.text
        case.validate_response(response, checks=[c for c in CHECKS if c is not not_a_server_error])
    else:
        case.validate_response(response, checks=CHECKS)


def test_served_openapi_json_is_the_yaml_file(base_url: str):
    port = int(base_url.rsplit(":", 1)[1])
    served = get(port, "/openapi.json")
    assert served.status == 200 and served.content_type.startswith("application/json"), served
    assert json.loads(served.body) == yaml.safe_load(SPEC.read_text())
    served_yaml = get(port, "/openapi.yaml")
    assert served_yaml.status == 200, served_yaml
    assert yaml.safe_load(served_yaml.body) == yaml.safe_load(SPEC.read_text())


def test_the_description_is_valid_openapi_3_1():
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    operations = {op.ok().label for op in schema.get_all_operations()}
    # The operations endpoints are on their own listener, not in the public API.
    assert operations == {"POST /deposit", "GET /details/{wallet_id}", "GET /openapi.json", "GET /openapi.yaml"}
