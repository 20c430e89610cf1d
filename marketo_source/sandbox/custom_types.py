"""Custom activity types: the draft/approved life cycle and the validation Marketo applies.

Not thread safe by itself: the Store calls it under its lock.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .catalog import CUSTOM_DATA_TYPES, CUSTOM_TYPE_FIRST_ID, AttributeDef, CustomTypeVersion, custom_api_name
from .errors import ApiError, blank, invalid

MAX_TYPES = 10
MAX_ATTRIBUTES = 20
REQUIRED_TYPE_FIELDS = ("apiName", "name", "triggerName", "filterName", "primaryAttribute")
_API_NAME = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9]{1,255}")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class CustomType:
    """A custom activity type with an approved version, a draft version, or both."""

    id: int
    api_name: str
    approved: CustomTypeVersion | None
    draft: CustomTypeVersion | None
    created_at: str
    updated_at: str

    @property
    def status(self) -> str:
        """Marketo's status word for the versions present."""
        if self.approved is None:
            return "draft"
        return "approved with draft" if self.draft is not None else "approved"

    @property
    def latest(self) -> CustomTypeVersion:
        """The draft when there is one, else the approved version: a type always has one of them."""
        version = self.draft or self.approved
        if version is None:
            raise AssertionError(f"custom type {self.api_name} has neither a draft nor an approved version")
        return version

    def editable_draft(self) -> CustomTypeVersion:
        """The draft, created from the approved version when there is none yet."""
        if self.draft is None:
            self.draft = copy.deepcopy(self.latest)
        self.updated_at = _now()
        return self.draft


def _attribute_json(attribute: AttributeDef) -> dict[str, Any]:
    return {"apiName": attribute.api_name, "name": attribute.name, "dataType": attribute.data_type,
            "description": attribute.description}


def _parse_attribute(item: Any) -> AttributeDef:
    if not isinstance(item, dict):
        raise invalid("Invalid attribute")
    for key in ("apiName", "name"):
        if not item.get(key):
            raise blank(key)
    if item.get("dataType") not in CUSTOM_DATA_TYPES:
        raise invalid(f"Invalid dataType '{item.get('dataType')}' for attribute '{item['apiName']}'")
    if not _API_NAME.fullmatch(str(item["apiName"])):
        raise invalid(f"Invalid apiName '{item['apiName']}'")
    return AttributeDef(str(item["name"]), item["dataType"], str(item["apiName"]), str(item.get("description", "")))


def _attribute_list(body: Any) -> list[Any]:
    attributes = body.get("attributes") if isinstance(body, dict) else None
    if not isinstance(attributes, list) or not attributes:
        raise blank("attributes")
    return attributes


class CustomTypeRegistry:
    """All custom activity types of the instance, keyed by apiName."""

    def __init__(self, seeded: dict[str, CustomTypeVersion], max_types: int = MAX_TYPES) -> None:
        self.types: dict[str, CustomType] = {}
        self.max_types = max_types
        self.next_id = CUSTOM_TYPE_FIRST_ID
        for api_name, version in seeded.items():
            self._add(api_name, approved=copy.deepcopy(version), draft=None)

    def _add(self, api_name: str, approved: CustomTypeVersion | None, draft: CustomTypeVersion | None) -> CustomType:
        now = _now()
        custom_type = CustomType(self.next_id, api_name, approved, draft, now, now)
        self.types[api_name] = custom_type
        self.next_id += 1
        return custom_type

    def get(self, api_name: str) -> CustomType:
        """The type named `api_name`.

        Raises:
            ApiError: 610 when there is no such type.
        """
        custom_type = self.types.get(api_name)
        if custom_type is None:
            raise ApiError("610", f"Activity type '{api_name}' not found")
        return custom_type

    def approved(self) -> dict[int, tuple[str, CustomTypeVersion]]:
        """Approved versions by type id: the custom types records may use."""
        return {t.id: (t.api_name, t.approved) for t in self.types.values() if t.approved is not None}

    def render(self, custom_type: CustomType, draft: bool = False, status: str | None = None) -> dict[str, Any]:
        """Render a type as a CustomActivityType result entry (the approved version unless `draft`)."""
        version = custom_type.approved if not draft and custom_type.approved is not None else custom_type.latest
        return {
            "id": custom_type.id, "apiName": custom_type.api_name, "name": version.name,
            "description": version.description, "triggerName": version.trigger_name,
            "filterName": version.filter_name, "status": status or custom_type.status,
            "createdAt": custom_type.created_at, "updatedAt": custom_type.updated_at,
            "primaryAttribute": _attribute_json(version.primary),
            "attributes": [_attribute_json(attribute) for attribute in version.attributes.values()],
        }

    def render_all(self) -> list[dict[str, Any]]:
        """Every type, as Get Custom Activity Types lists them."""
        return [self.render(custom_type) for custom_type in self.types.values()]

    def describe(self, api_name: str, draft: bool) -> dict[str, Any]:
        """Describe one type; `draft` asks for the draft version."""
        custom_type = self.get(api_name)
        if draft and custom_type.draft is None:
            raise ApiError("709", f"Activity type '{api_name}' has no draft version")
        return self.render(custom_type, draft=draft)

    def create(self, body: Any) -> dict[str, Any]:
        """Create a type as a draft from a CustomActivityTypeRequest body."""
        if not isinstance(body, dict):
            raise blank("apiName")
        for key in REQUIRED_TYPE_FIELDS:
            if not body.get(key):
                raise blank(key)
        api_name = str(body["apiName"])
        if not _API_NAME.fullmatch(api_name):
            raise invalid(f"Invalid apiName '{api_name}': alphanumeric with at least one letter, at most 255")
        if len(self.types) >= self.max_types:
            raise ApiError("1027", f"Max custom activity types reached ({self.max_types})")
        if api_name in self.types:
            raise ApiError("709", f"Activity type with apiName '{api_name}' already exists")
        self._check_name_free(str(body["name"]), api_name)
        version = CustomTypeVersion(str(body["name"]), str(body["triggerName"]), str(body["filterName"]),
                                    _parse_attribute(body["primaryAttribute"]), str(body.get("description", "")))
        return self.render(self._add(api_name, approved=None, draft=version))

    def _check_name_free(self, name: str, api_name: str) -> None:
        for other in self.types.values():
            versions = (other.approved, other.draft)
            if other.api_name != api_name and any(v is not None and v.name == name for v in versions):
                raise ApiError("709", f"Activity type with name '{name}' already exists")

    def update(self, api_name: str, body: Any) -> dict[str, Any]:
        """Update the draft's name, trigger/filter names, description or primary attribute."""
        custom_type = self.get(api_name)
        if not isinstance(body, dict):
            raise invalid("Invalid request body")
        if body.get("name"):
            self._check_name_free(str(body["name"]), api_name)
        draft = custom_type.editable_draft()
        draft.name = str(body.get("name") or draft.name)
        draft.trigger_name = str(body.get("triggerName") or draft.trigger_name)
        draft.filter_name = str(body.get("filterName") or draft.filter_name)
        draft.description = str(body.get("description", draft.description))
        if body.get("primaryAttribute"):
            draft.primary = _parse_attribute(body["primaryAttribute"])
        return self.render(custom_type, draft=True)

    def approve(self, api_name: str) -> dict[str, Any]:
        """Make the draft the approved version."""
        custom_type = self.get(api_name)
        if custom_type.draft is None:
            raise ApiError("709", f"Activity type '{api_name}' has no draft to approve")
        custom_type.approved, custom_type.draft = custom_type.draft, None
        custom_type.updated_at = _now()
        return self.render(custom_type)

    def discard_draft(self, api_name: str) -> dict[str, Any]:
        """Drop the draft; a type that was never approved must be deleted instead."""
        custom_type = self.get(api_name)
        if custom_type.draft is None or custom_type.approved is None:
            raise ApiError("709", f"Activity type '{api_name}' has no draft to discard next to an approved version")
        custom_type.draft = None
        custom_type.updated_at = _now()
        return self.render(custom_type)

    def delete(self, api_name: str) -> dict[str, Any]:
        """Delete the type; later calls naming it get 610."""
        custom_type = self.get(api_name)
        del self.types[api_name]
        return self.render(custom_type, status="deleted")

    def create_attributes(self, api_name: str, body: Any) -> dict[str, Any]:
        """Add attributes to the draft."""
        custom_type = self.get(api_name)
        new_attributes = [_parse_attribute(item) for item in _attribute_list(body)]
        current = custom_type.latest.attributes
        clashes = [a.api_name for a in new_attributes if a.api_name in current]
        if clashes:
            raise ApiError("709", f"Attribute '{clashes[0]}' already exists")
        if len(current) + len(new_attributes) > MAX_ATTRIBUTES:
            raise ApiError("1028", f"Max attributes per activity type reached ({MAX_ATTRIBUTES})")
        draft = custom_type.editable_draft()
        draft.attributes.update({custom_api_name(attribute): attribute for attribute in new_attributes})
        return self.render(custom_type, draft=True)

    def update_attributes(self, api_name: str, body: Any) -> dict[str, Any]:
        """Replace existing attributes of the draft (matched by apiName)."""
        custom_type = self.get(api_name)
        updated = [_parse_attribute(item) for item in _attribute_list(body)]
        self._require_known(custom_type, [custom_api_name(attribute) for attribute in updated])
        draft = custom_type.editable_draft()
        draft.attributes.update({custom_api_name(attribute): attribute for attribute in updated})
        return self.render(custom_type, draft=True)

    def delete_attributes(self, api_name: str, body: Any) -> dict[str, Any]:
        """Remove attributes (matched by apiName) from the draft."""
        custom_type = self.get(api_name)
        names = [str(item.get("apiName")) if isinstance(item, dict) else "" for item in _attribute_list(body)]
        self._require_known(custom_type, names)
        draft = custom_type.editable_draft()
        for name in names:
            del draft.attributes[name]
        return self.render(custom_type, draft=True)

    @staticmethod
    def _require_known(custom_type: CustomType, names: list[str]) -> None:
        current = custom_type.latest.attributes
        unknown = [name for name in names if name not in current]
        if unknown:
            raise invalid(f"Attribute '{unknown[0]}' not found")
