"""Shared pytest configuration."""
from __future__ import annotations

import os

import pytest

pytest_plugins = ["pytester"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in item.nodeid.split("/") or "scenarios" in item.nodeid.split("/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def require_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces / TAP devices)")
