"""Errors the source raises. Catch `MarketoError` for all of them."""

from typing import Optional


class MarketoError(Exception):
    """Base of every error the Marketo source raises.

    Attributes:
        code: Marketo's error code (a string such as "1003") or None for errors found on our side.
        endpoint: The API path that answered, when there was a call.
    """

    def __init__(self, message: str, code: Optional[str] = None, endpoint: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.endpoint = endpoint


class MarketoConfigurationError(MarketoError, ValueError):
    """A setting is missing or wrong; the message names it and says what to do."""


class MarketoAuthError(MarketoError):
    """Marketo refused the client id and secret, or kept refusing new tokens."""


class MarketoAccessDenied(MarketoError):
    """603: the API user's role lacks a permission the call needs."""


class MarketoQuotaExceeded(MarketoError):
    """607: the instance's daily API quota is used up; it resets at midnight US Central time."""


class MarketoDailyLimitReached(MarketoError):
    """The source's own `daily_call_limit` is reached: it leaves the rest of the quota to others."""


class MarketoTransientError(MarketoError):
    """A transient failure (rate limit, timeout, server error) that outlasted every retry."""


class MarketoWriteUncertain(MarketoError):
    """A write failed in a way that does not tell whether Marketo applied it (a timeout, a reset,
    a 5xx or 611); it was not sent again. Read back before resending: custom activities are
    write-once, so a blind resend could add them twice."""


class MarketoRequestError(MarketoError):
    """Marketo rejected the call's parameters or data (701, 704, 709, 1003, ...)."""


class MarketoNotFound(MarketoRequestError):
    """610: the requested resource does not exist."""


class MarketoListTooLarge(MarketoRequestError):
    """1003 for a `list_id` whose list holds 10,000 or more leads."""



def marketo_error_behind(error: Optional[BaseException]) -> Optional[MarketoError]:
    """The Marketo error behind `error`, such as dlt's `PipelineStepFailed`, or None.

    dlt wraps what a source or destination raises; the Marketo error is the one whose message
    names the setting and says what to do.
    """
    while error is not None:
        if isinstance(error, MarketoError):
            return error
        error = error.__cause__ or error.__context__
    return None
