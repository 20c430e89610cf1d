"""The file of a Bulk Activity Extract job: activities written as Marketo's export CSV.

Marketo documents the file as CSV with a header row, the default columns `DEFAULT_FIELDS` (no `id`),
`attributes` as one JSON object per row (`{"Webpage ID": 12, "Client IP Address": "..."}`), CSV-quoted,
and an empty value written `null`. The layout details Marketo does not document are the sandbox's
choices: rows end with a line feed, a cell is quoted when it holds a quote, comma, carriage return,
line feed or NUL byte (or starts or ends with a space), `activityDate` is the date as Get Lead
Activities renders it, and an activity without attributes gets `null` in the `attributes` column.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

DEFAULT_FIELDS: tuple[str, ...] = (
    "marketoGUID", "leadId", "activityDate", "activityTypeId", "campaignId", "primaryAttributeValueId",
    "primaryAttributeValue", "attributes",
)
# Marketo adds `actionResult` on request; the sandbox's activities carry none, so the column holds `null`.
EXPORT_FIELDS: frozenset[str] = frozenset(DEFAULT_FIELDS) | {"actionResult"}
NULL = "null"
_QUOTED_CHARACTERS = frozenset('",\r\n\x00')
_ATTRIBUTES_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def export_csv(activities: Iterable[Mapping[str, Any]], fields: Sequence[str] = DEFAULT_FIELDS,
               header_names: Mapping[str, str] | None = None) -> bytes:
    """Write activities as the CSV file of a Bulk Activity Extract job.

    Args:
        activities: Records as Get Lead Activities renders them (`attributes` a list of
            {"name", "value"} dicts); `id` is left out, as bulk files carry none.
        fields: The columns, in order (the `fields` of the create request); each one of EXPORT_FIELDS.
        header_names: Header text per field (the `columnHeaderNames` of the create request); fields not
            named keep their own name.

    Returns:
        The file, UTF-8: a header row, then one row per activity.

    Raises:
        ValueError: For a field not in EXPORT_FIELDS.
    """
    unknown = [name for name in fields if name not in EXPORT_FIELDS]
    if unknown:
        raise ValueError(f"unknown export field {unknown[0]!r}")
    names = header_names or {}
    lines = [_row([names.get(name, name) for name in fields])]
    lines += [_row([_value(activity, name) for name in fields]) for activity in activities]
    return "".join(lines).encode()


def _value(activity: Mapping[str, Any], field: str) -> str:
    if field == "attributes":
        attributes = activity.get("attributes")
        if not attributes:
            return NULL
        return _ATTRIBUTES_ENCODER.encode({attribute["name"]: attribute["value"] for attribute in attributes})
    value = activity.get(field)
    return NULL if value is None or value == "" else str(value)


def _row(cells: list[str]) -> str:
    return ",".join(_cell(cell) for cell in cells) + "\n"


def _cell(text: str) -> str:
    if _QUOTED_CHARACTERS.isdisjoint(text) and text == text.strip(" "):
        return text
    return '"' + text.replace('"', '""') + '"'
