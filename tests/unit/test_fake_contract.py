"""The fake provider passes the same conformance suite as the real ones."""

from __future__ import annotations

import pytest

from hpcorch.testing import FakeProvider, ProviderContract


class TestFakeContract(ProviderContract):
    @pytest.fixture
    def provider(self) -> FakeProvider:
        return FakeProvider()
