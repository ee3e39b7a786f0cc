"""Fixtures for the SDK end-to-end tests.

The Rust harness (tests/sdk.rs) starts the mock upstream and the real
tracegate binary, then runs pytest with TRACEGATE_URL pointing at the gateway.
"""

import os
import uuid

import pytest
from rllm_model_gateway.client import GatewayClient

GATEWAY = os.environ["TRACEGATE_URL"].rstrip("/")
# A credential the SDK sends; it must never be stored.
API_KEY = "sk-tracegate-test-" + uuid.uuid4().hex


@pytest.fixture
def gateway():
    """rLLM's own GatewayClient, unchanged, against tracegate."""
    with GatewayClient(GATEWAY) as client:
        yield client


@pytest.fixture
def session_id():
    return f"sdk-{uuid.uuid4().hex[:12]}"
