"""The security suite: the running stack (Apache Kafka, the services as processes, real
HTTP) attacked the way a client could, with real keys and real signed tokens."""

from __future__ import annotations

import pytest
from security_support import Issuer


@pytest.fixture(scope="module")
def issuer(tmp_path_factory) -> Issuer:
    return Issuer(tmp_path_factory.mktemp("issuer") / "jwks.json")
