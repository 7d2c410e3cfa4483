"""The shipped conformance suite, run against the local provider (cold and warm)."""

from __future__ import annotations

import subprocess

import pytest

from hpcorch.providers.local import LocalProvider, LocalSettings
from hpcorch.spec import RunSpec
from hpcorch.testing import ProviderContract


class TestLocalColdContract(ProviderContract):
    @pytest.fixture
    def provider(self):  # type: ignore[no-untyped-def]
        provider = LocalProvider(LocalSettings(workers=2, warm=False))
        yield provider
        provider.close()


def _run_command_in_child(spec: RunSpec) -> int:
    """A warm executor that runs the spec's command (what a real executor replaces)."""
    return subprocess.run(list(spec.command), check=False).returncode


class TestLocalWarmContract(ProviderContract):
    @pytest.fixture
    def provider(self):  # type: ignore[no-untyped-def]
        provider = LocalProvider(
            LocalSettings(workers=2, warm=True), executor=_run_command_in_child
        )
        yield provider
        provider.close()
