"""Errors the source raises. Catch `MarketoError` for all of them."""

from typing import Any, Optional, Self, Set, get_args

from dlt.common.configuration.exceptions import ConfigFieldMissingException, ConfigValueCannotBeCoercedException


class MarketoError(Exception):
    """Base of every error the Marketo source raises.

    Attributes:
        code: Marketo's error code (a string such as "1003") or None for errors found on our side.
        endpoint: The API path that answered, when there was a call.
        setting: The setting at fault, when one is: its message reads `<setting>: <what is wrong>;
            <what to do>`.
    """

    def __init__(self, message: str, code: Optional[str] = None, endpoint: Optional[str] = None,
                 setting: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.endpoint = endpoint
        self.setting = setting

    @classmethod
    def of(cls, setting: str, problem: str, advice: str, code: Optional[str] = None,
           endpoint: Optional[str] = None) -> Self:
        """The error of a setting: `<setting>: <problem>; <advice>`, one line."""
        return cls(f"{setting}: {problem}; {advice}", code, endpoint, setting)


class MarketoConfigurationError(MarketoError, ValueError):
    """A setting is missing or wrong (or the instance it names cannot be reached or is not
    Marketo); the message names it and says what to do."""


class MarketoAuthError(MarketoError):
    """Marketo refused the client id and secret, or kept refusing new tokens; `setting` names the
    credentials' settings in the section they came from."""


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


class MarketoBulkFileError(MarketoError):
    """A bulk export file does not match its job (size, checksum or record count), or cannot be
    read as an export file. Nothing of it was loaded, and the partial file is gone: download again."""


class MarketoBulkFileGone(MarketoError):
    """A completed bulk export's file is no longer there (HTTP 404; Marketo keeps files for days, not
    for ever): create and enqueue the job again."""



def marketo_error_behind(error: Optional[BaseException]) -> Optional[MarketoError]:
    """The Marketo error behind `error`, such as dlt's `PipelineStepFailed`, or None.

    dlt wraps what a source or destination raises; the Marketo error is the one whose message
    names the setting and says what to do. dlt's own errors for a setting it cannot read (a value
    of the wrong type, a required value missing) come back as `MarketoConfigurationError`.
    """
    while error is not None:
        if isinstance(error, MarketoError):
            return error
        if isinstance(error, ConfigValueCannotBeCoercedException):
            return _not_coerced(error)
        if isinstance(error, ConfigFieldMissingException):
            return MarketoConfigurationError.of(
                error.fields[0], "not set", "set it in .dlt/config.toml (secrets in .dlt/secrets.toml) or as an "
                "environment variable, e.g. SOURCES__MARKETO__" + error.fields[0].upper(),
            )
        error = error.__cause__ or error.__context__
    return None


def _not_coerced(error: ConfigValueCannotBeCoercedException) -> MarketoConfigurationError:
    types = _types_in(error.hint)
    if list in types:
        return MarketoConfigurationError.of(
            error.field_name, f"{error.field_value!r} is not a list",
            "give a list in JSON, e.g. [1, 6], in an environment variable too",
        )
    kind = next((name for python_type, name in _KINDS if python_type in types), "of the setting's type")
    return MarketoConfigurationError.of(error.field_name, f"{error.field_value!r} is not {kind}", f"give {kind}")


_KINDS = ((bool, "true or false"), (int, "a whole number"), (float, "a number"), (str, "text"))


def _types_in(hint: Any) -> Set[Any]:
    """`hint`, its origin (list for List[int]) and those of its arguments (Optional[...])."""
    found = {hint, getattr(hint, "__origin__", None)}
    for argument in get_args(hint):
        found |= _types_in(argument)
    return found
