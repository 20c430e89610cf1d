"""Fixtures for the sandbox tests: a sandbox with fixed data and a client for it (real HTTP on 127.0.0.1)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from marketo_source.sandbox import Limits, MarketoSandbox

from sandbox_helpers import TEST_DATA, Api, StartSandbox


@pytest.fixture
def start_sandbox(marketo_sandbox_factory: Callable[..., MarketoSandbox]) -> StartSandbox:
    """Start a sandbox with the test data (no rate limit unless given); stopped at teardown."""

    def start(**kwargs: Any) -> MarketoSandbox:
        kwargs.setdefault("data", TEST_DATA)
        kwargs.setdefault("limits", Limits(calls_per_window=None))
        return marketo_sandbox_factory(**kwargs)

    return start


@pytest.fixture
def sandbox(start_sandbox: StartSandbox) -> MarketoSandbox:
    """A started sandbox with the test data and no rate limit."""
    return start_sandbox()


@pytest.fixture
def api(sandbox: MarketoSandbox) -> Api:
    """A client for `sandbox`, already holding a token."""
    return Api(sandbox)


@pytest.fixture
def client_for() -> Callable[[MarketoSandbox], Api]:
    """Build a client for another sandbox."""
    return Api


@pytest.fixture(params=["commit", "date"])
def token_order(request: pytest.FixtureRequest) -> str:
    """Each token order in turn: the test runs once per reading of what a paging token marks."""
    return request.param


@pytest.fixture
def ordered_api(start_sandbox: Callable[..., MarketoSandbox], token_order: str) -> Api:
    """A client for a sandbox with the test data whose tokens follow `token_order`."""
    return Api(start_sandbox(token_order=token_order))
