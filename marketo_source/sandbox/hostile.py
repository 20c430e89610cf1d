"""Activities whose text values are hard on CSV readers, so export file parsers can be tested on them.

Peers met NUL bytes, carriage returns and multi-byte characters in Marketo's export files; quotes,
commas and line feeds are what CSV quoting exists for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .catalog import CHANGE_DATA_VALUE
from .records import Activity

HOSTILE_VALUES: tuple[str, ...] = (
    'She said "hello", then left',
    "first line\nsecond line",
    "carriage\rreturn and\r\nCRLF",
    "NUL\x00byte",
    "東京 Zoë Ørsted 🚀 — ünïcödé",
    ",leading comma",
    '"',
    '""',
    " padded with spaces ",
    "tab\there",
    "back\\slash \\\" escaped quote",
    "{\"looks\": \"like JSON\"}",
    "trailing newline\n",
)


def make_hostile(activity: Activity, index: int) -> Activity:
    """The activity with its primary attribute value and text attribute values taken from HOSTILE_VALUES.

    `index` picks the values, so consecutive activities cover every one. Change Data Value records keep
    their values: Get Lead Changes renders them from the field change, which must agree.
    """
    if activity.type_id == CHANGE_DATA_VALUE:
        return activity
    count = len(HOSTILE_VALUES)
    primary = None if activity.primary_value is None else HOSTILE_VALUES[index % count]
    attributes = tuple(_hostile_attribute(attribute, index + offset)
                       for offset, attribute in enumerate(activity.attributes, 1))
    return replace(activity, primary_value=primary, attributes=attributes)


def _hostile_attribute(attribute: dict[str, Any], index: int) -> dict[str, Any]:
    if not isinstance(attribute["value"], str):
        return attribute
    return {**attribute, "value": HOSTILE_VALUES[index % len(HOSTILE_VALUES)]}
