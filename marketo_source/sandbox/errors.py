"""Marketo error codes and the exception that carries one to the envelope."""

from __future__ import annotations

# Messages as Marketo words them, for codes the sandbox answers without a call-specific message.
MESSAGES: dict[str, str] = {
    "601": "Access token invalid",
    "602": "Access token expired",
    "603": "Access denied",
    "604": "Request timed out",
    "606": "Max rate limit '{calls}' exceeded with in '{window}' secs",
    "607": "Daily quota reached",
    "608": "API Temporarily Unavailable",
    "609": "Invalid JSON",
    "611": "System error",
    "615": "Concurrent access limit reached",
    "713": "Transient Error",
}


class ApiError(Exception):
    """A Marketo error answer: HTTP 200 with success false and one coded error."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(f"{code}: {message or MESSAGES.get(code, '')}")
        self.code = code
        self.message = message or MESSAGES.get(code, "")


def blank(parameter: str) -> ApiError:
    """701: a required value is missing."""
    return ApiError("701", f"{parameter} cannot be blank")


def invalid(message: str) -> ApiError:
    """1003: invalid data."""
    return ApiError("1003", message)
