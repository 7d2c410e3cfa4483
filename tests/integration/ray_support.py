"""Shared fixtures of the Ray integration tests: the real local head (scripts/ray-up.sh)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import require_service
from tests.integration.slurm_support import wait_for

#: The head the tests use: scripts/ray-up.sh's, unless HPCORCH_RAY_ADDRESS names another.
RAY_URL = os.environ.get("HPCORCH_RAY_ADDRESS", "http://127.0.0.1:8265").rstrip("/")
HOW = ("start it with scripts/ray-up.sh and run the tests inside its network namespace: "
       "scripts/in-netns.sh .venv/bin/python -m pytest -m ray")


def ray_available() -> bool:
    """True when Ray is installed and the head's dashboard answers its health check."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    try:
        with urllib.request.urlopen(RAY_URL + "/api/gcs_healthz", timeout=3):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def ray_url() -> str:
    """The Jobs API URL of the real local Ray head (skip, or fail under CI=true, without it)."""
    require_service(ray_available(), f"a Ray head at {RAY_URL}", HOW)
    return RAY_URL


def token_headers() -> dict[str, str]:
    """Authenticate as Ray's SDK does: Ray's own token loader, bearer header."""
    from hpcorch.providers.ray.cluster import auth_headers

    return auth_headers()


def dashboard_get(path: str, headers: dict[str, str] | None = None) -> Any:
    """GET a dashboard API path and decode its JSON (HTTPError propagates)."""
    request = urllib.request.Request(RAY_URL + path, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read().decode())


def wait_until(condition: Callable[[], Any], timeout: float = 120.0, what: str = "") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout`."""
    return wait_for(condition, what, timeout=timeout, step=0.05)
