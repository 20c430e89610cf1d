"""Rows to Add Custom Activities items: the columns, the instance's approved types, each row's key,
and the values Marketo accepts (the columns are described in the package docs)."""

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Union

from marketo_source.client import MarketoClient
from marketo_source.custom_activity_types import CustomActivityTypes
from marketo_source.errors import MarketoConfigurationError
from marketo_source.schema import parse_timestamp

LOCAL_REJECTION_CODE = "invalid_row"
"""Error code of rows skipped before sending because they cannot make a valid item."""

LEAD_ID_COLUMNS = ("lead_id", "leadId")
DATE_COLUMN = "activity_date"
TYPE_ID_COLUMN = "activity_type_id"
TYPE_API_NAME_COLUMN = "activity_type_api_name"
PRIMARY_VALUE_COLUMN = "primary_attribute_value"
ROW_KEY_COLUMN = "row_key"
_RESERVED_COLUMNS = frozenset({*LEAD_ID_COLUMNS, DATE_COLUMN, TYPE_ID_COLUMN, TYPE_API_NAME_COLUMN,
                               PRIMARY_VALUE_COLUMN, ROW_KEY_COLUMN})
_APPROVED_STATUSES = frozenset({"approved", "approved with draft"})

MatchKey = Tuple[int, int, datetime, str]
"""What reconciliation matches on: leadId, activityTypeId, activityDate (UTC instant), primaryAttributeValue."""


@dataclass(frozen=True)
class _Activity:
    """A row mapped to an Add Custom Activities item, with its ledger key."""

    row_key: str
    item: Dict[str, Any]

    @property
    def match_key(self) -> MatchKey:
        return _match_key(self.item)


def _match_key(record: Mapping[str, Any]) -> MatchKey:
    return (int(record["leadId"]), int(record["activityTypeId"]), parse_timestamp(record["activityDate"]),
            str(record.get("primaryAttributeValue")))


@dataclass(frozen=True)
class _Rejected:
    """A row that cannot make a valid item: skipped before sending, kept in the ledger."""

    row_key: str
    message: str
    row: Mapping[str, Any]


class _RowError(ValueError):
    """A row value that cannot go into an item; the message names the column."""


class _ApprovedTypes:
    """The instance's approved custom activity types, listed when first needed.

    A type or attribute missing from the list may have been created or approved since; the list
    is then read again, at most once per push, so a table full of a wrong type name costs one call.
    """

    def __init__(self, client: MarketoClient) -> None:
        self._types = CustomActivityTypes(client)
        self._by_id: Dict[int, Dict[str, Any]] = {}
        self._by_api_name: Dict[str, Dict[str, Any]] = {}
        self._stale = True

    def expire(self) -> None:
        """Lets the next miss read the list again."""
        self._stale = True

    def refresh_if_stale(self) -> bool:
        """Reads the list again unless it was read since `expire`; returns whether it did."""
        if not self._stale:
            return False
        approved = [t for t in self._types.list() if t.get("status") in _APPROVED_STATUSES]
        self._by_id = {t["id"]: t for t in approved}
        self._by_api_name = {t["apiName"]: t for t in approved}
        self._stale = False
        return True

    def find(self, type_id: Optional[int] = None, api_name: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """The approved type with this id (or else this apiName), or None."""
        found = self._lookup(type_id, api_name)
        if found is None and self.refresh_if_stale():
            found = self._lookup(type_id, api_name)
        return found

    def _lookup(self, type_id: Optional[int], api_name: Optional[str]) -> Optional[Dict[str, Any]]:
        return self._by_id.get(type_id) if type_id is not None else self._by_api_name.get(api_name or "")

    def api_names(self) -> List[str]:
        """apiNames of the approved types, for error messages."""
        return sorted(self._by_api_name)


class _RowMapper:
    """Turns table rows into Add Custom Activities items (the columns are in the package docs)."""

    def __init__(self, types: _ApprovedTypes, default_type_api_name: Optional[str]) -> None:
        self._types = types
        self._default_type_api_name = default_type_api_name

    def map(self, row: Mapping[str, Any]) -> Union[_Activity, _Rejected]:
        """The row's item, or why it cannot be sent.

        Raises:
            MarketoConfigurationError: The row names no type and no default is set, the default
                type is not approved, or a column is not an attribute of its type: problems of the
                whole table, fixed in the settings or the query rather than row by row.
        """
        try:
            activity_type = self._activity_type(row)
            item = self._item(row, activity_type)
        except _RowError as error:
            return _Rejected(_explicit_key(row) or _content_key(row), str(error), row)
        return _Activity(_explicit_key(row) or _content_key(item), item)

    def _activity_type(self, row: Mapping[str, Any]) -> Dict[str, Any]:
        value: Union[int, str]
        if row.get(TYPE_ID_COLUMN) is not None:
            column, value = TYPE_ID_COLUMN, _whole_number(row[TYPE_ID_COLUMN], TYPE_ID_COLUMN)
            found = self._types.find(type_id=value)
        elif row.get(TYPE_API_NAME_COLUMN) is not None:
            column, value = TYPE_API_NAME_COLUMN, str(row[TYPE_API_NAME_COLUMN])
            found = self._types.find(api_name=value)
        else:
            return self._default_type()
        if found is None:
            raise _RowError(f"{column} {value!r} is not an approved custom activity type "
                            f"(approved: {self._types.api_names()})")
        return found

    def _default_type(self) -> Dict[str, Any]:
        if not self._default_type_api_name:
            raise MarketoConfigurationError(
                f"Rows need an {TYPE_ID_COLUMN} or {TYPE_API_NAME_COLUMN} column, or set activity_type_api_name "
                "(destination.marketo_custom_activities.activity_type_api_name) for the whole table."
            )
        found = self._types.find(api_name=self._default_type_api_name)
        if found is None:
            raise MarketoConfigurationError(
                f"activity_type_api_name {self._default_type_api_name!r} is not an approved custom activity type "
                f"of this instance (approved: {self._types.api_names()}). Create and approve it first, e.g. with "
                "ensure_custom_activity_type."
            )
        return found

    def _item(self, row: Mapping[str, Any], activity_type: Mapping[str, Any]) -> Dict[str, Any]:
        lead_column = next((c for c in LEAD_ID_COLUMNS if row.get(c) is not None), LEAD_ID_COLUMNS[0])
        primary_value = row.get(PRIMARY_VALUE_COLUMN)
        if primary_value is None or primary_value == "":
            raise _RowError(f"{PRIMARY_VALUE_COLUMN} is empty; Marketo requires it")
        return {
            "leadId": _whole_number(row.get(lead_column), lead_column),
            "activityTypeId": activity_type["id"],
            "activityDate": _utc_text(_timestamp(row.get(DATE_COLUMN), DATE_COLUMN)),
            "primaryAttributeValue": str(_json_value(primary_value, PRIMARY_VALUE_COLUMN)),
            "attributes": self._attributes(row, activity_type),
        }

    def _attributes(self, row: Mapping[str, Any], activity_type: Mapping[str, Any]) -> List[Dict[str, Any]]:
        given = {column: value for column, value in row.items()
                 if column not in _RESERVED_COLUMNS and value is not None}
        if set(given) - _attribute_names(activity_type) and self._types.refresh_if_stale():
            # The type may have gained attributes since it was listed.
            activity_type = self._types.find(type_id=activity_type["id"]) or activity_type
        unknown = sorted(set(given) - _attribute_names(activity_type))
        if unknown:
            raise MarketoConfigurationError(
                f"Columns {unknown} are not attributes of custom activity type {activity_type.get('apiName')!r} "
                f"(its attributes: {sorted(_attribute_names(activity_type))}). Rename them to attribute apiNames, "
                "drop them from the query, or add the attributes to the type."
            )
        return [{"apiName": column, "value": _json_value(given[column], column)} for column in sorted(given)]


def _attribute_names(activity_type: Mapping[str, Any]) -> Set[str]:
    return {a["apiName"] for a in activity_type.get("attributes") or [] if a.get("apiName")}


def _explicit_key(row: Mapping[str, Any]) -> Optional[str]:
    value = row.get(ROW_KEY_COLUMN)
    return None if value is None or value == "" else str(value)


def _content_key(content: Mapping[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _whole_number(value: Any, column: str) -> int:
    if isinstance(value, bool):
        raise _RowError(f"{column} is {value!r}, not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)) and value == int(value):
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise _RowError(f"{column} is {'missing' if value is None else repr(value)}; a whole number is required")


def _timestamp(value: Any, column: str) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return parse_timestamp(value.strip())
        except ValueError:
            pass
    raise _RowError(f"{column} is {'missing' if value is None else repr(value)}; an ISO 8601 date or datetime "
                    "is required")


def _utc_text(moment: datetime) -> str:
    # Whole seconds: Marketo keeps activity dates to the second, and reconciliation compares
    # what it reads back with what was sent.
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_value(value: Any, column: str) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, datetime):
        return _utc_text(_timestamp(value, column))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise _RowError(f"{column} holds {type(value).__name__} {value!r}, which cannot be sent as JSON") from None
    return value
