"""A short fuzz run over every parser of peer bytes (scripts/fuzz.py runs the long one): no input may raise
anything but the parser's declared rejection type."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from harness.fuzz import check, targets


@pytest.mark.parametrize("target", targets(), ids=lambda t: t.name)
def test_only_declared_errors(target) -> None:  # noqa: ANN001
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target.strategy)
    def run(data: bytes) -> None:
        assert check(target, data) is None, data[:80]

    run()
