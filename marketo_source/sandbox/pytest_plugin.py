"""pytest fixtures for a Marketo sandbox on a free port (registered as the pytest11 entry point)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from .generator import DataSpec
from .sandbox import MarketoSandbox

SMALL_DATA = DataSpec(seed=1, leads=50, activities=1500, days=30)


@pytest.fixture
def marketo_sandbox_factory() -> Iterator[Callable[..., MarketoSandbox]]:
    """Call with MarketoSandbox keyword arguments to get a started sandbox; all are stopped at teardown."""
    started: list[MarketoSandbox] = []

    def start(**kwargs: Any) -> MarketoSandbox:
        kwargs.setdefault("data", SMALL_DATA)
        sandbox = MarketoSandbox(**kwargs).start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def marketo_sandbox(marketo_sandbox_factory: Callable[..., MarketoSandbox]) -> MarketoSandbox:
    """A started sandbox with small default data (50 leads, 1,500 activities)."""
    return marketo_sandbox_factory()
