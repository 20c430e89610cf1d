"""Custom activity types: every custom activity type call of the API, definitions in code or TOML, and
keeping a type in line with its definition.

    from marketo_source import MarketoClient
    from marketo_source.custom_activity_types import CustomActivityTypeDefinition, ensure_custom_activity_type

    definition = CustomActivityTypeDefinition.from_toml("activity_types.toml", table="webinar")
    changes = ensure_custom_activity_type(client, definition)  # [] when Marketo already matches it

Definitions are checked when they are built, so what Marketo would refuse (a missing field, a bad
apiName, an unknown data type, more than 20 attributes) fails before any call, with a
`MarketoConfigurationError` that names the field.
"""

import re
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.errors import MarketoConfigurationError

_API_NAME = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*")
_DRAFT_STATUSES = frozenset({"draft", "approved with draft"})

_Definition = TypeVar("_Definition", "AttributeDefinition", "CustomActivityTypeDefinition")


def _check_api_name(value: Any, field: str) -> str:
    """Returns `value` if Marketo accepts it as an apiName, else raises naming `field`.

    Raises:
        MarketoConfigurationError: `value` is empty, not alphanumeric, has no letter or is too long.
    """
    if not isinstance(value, str) or not value:
        raise MarketoConfigurationError(f"{field} is required: give an apiName such as 'webinarAttendance'.")
    if len(value) > settings.MAX_CUSTOM_API_NAME_LENGTH or not _API_NAME.fullmatch(value):
        raise MarketoConfigurationError(
            f"{field} {value!r} is not a valid apiName: use letters and digits only, with at least one "
            f"letter and at most {settings.MAX_CUSTOM_API_NAME_LENGTH} characters (e.g. 'webinarAttendance')."
        )
    return value


def _check_text(value: Any, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise MarketoConfigurationError(f"{field} is required and must be non-empty text.")


def _check_optional_text(value: Any, field: str) -> None:
    if value is not None and not isinstance(value, str):
        raise MarketoConfigurationError(f"{field} must be text (got {value!r}); leave it out for none.")


@dataclass(frozen=True)
class AttributeDefinition:
    """One attribute of a custom activity type.

    Attributes:
        api_name: The attribute's key in API calls: letters and digits, at least one letter.
        name: Its display name in Marketo (activity tables name their columns after it).
        data_type: One of string, boolean, integer, float, link, email, currency, date,
            datetime, phone, text.
        description: Optional description; None leaves Marketo's as it is.
        is_primary: Makes this the type's primary attribute when sent with attribute calls;
            leave it False in a `CustomActivityTypeDefinition` (use its `primary_attribute`).

    Raises:
        MarketoConfigurationError: A field Marketo would refuse, named in the message.
    """

    api_name: str
    name: str
    data_type: str
    description: Optional[str] = None
    is_primary: bool = False

    def __post_init__(self) -> None:
        where = f"attribute {self.api_name!r}" if isinstance(self.api_name, str) and self.api_name else "attribute"
        _check_api_name(self.api_name, f"{where}: api_name")
        _check_text(self.name, f"{where}: name")
        if self.data_type not in settings.CUSTOM_ATTRIBUTE_DATA_TYPES:
            raise MarketoConfigurationError(
                f"{where}: data_type {self.data_type!r} is not a Marketo data type; use one of "
                f"{', '.join(settings.CUSTOM_ATTRIBUTE_DATA_TYPES)}."
            )
        _check_optional_text(self.description, f"{where}: description")
        if not isinstance(self.is_primary, bool):
            raise MarketoConfigurationError(f"{where}: is_primary must be true or false.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AttributeDefinition":
        """Builds an attribute from a mapping with the field names as keys (as in TOML)."""
        return _from_mapping(cls, data, "attribute")

    def to_api(self) -> Dict[str, Any]:
        """The attribute as Marketo's calls take it."""
        body: Dict[str, Any] = {"apiName": self.api_name, "name": self.name, "dataType": self.data_type}
        if self.description is not None:
            body["description"] = self.description
        if self.is_primary:
            body["isPrimary"] = True
        return body

    def differs_from(self, marketo_attribute: Mapping[str, Any]) -> bool:
        """Whether Marketo's version of this attribute has another name, data type or description
        (the description only when this definition sets one)."""
        if (marketo_attribute.get("name"), marketo_attribute.get("dataType")) != (self.name, self.data_type):
            return True
        return self.description is not None and (marketo_attribute.get("description") or "") != self.description


@dataclass(frozen=True)
class CustomActivityTypeDefinition:
    """What a custom activity type should look like; `ensure_custom_activity_type` makes Marketo match it.

    Attributes:
        api_name: The type's key in API calls: letters and digits, at least one letter (Adobe
            advises a namespace prefix, e.g. 'acmeWebinarAttendance').
        name: Display name; activity tables are named after it (`activity_` + snake_case).
        trigger_name: Name of the smart campaign trigger, e.g. 'Attends Webinar'.
        filter_name: Name of the smart list filter, e.g. 'Attended Webinar'.
        primary_attribute: The attribute activities are listed by (their primaryAttributeValue).
        attributes: The other attributes, at most 20, apiNames unique.
        description: Optional description; None leaves Marketo's as it is.

    Raises:
        MarketoConfigurationError: A field Marketo would refuse, named in the message.
    """

    api_name: str
    name: str
    trigger_name: str
    filter_name: str
    primary_attribute: AttributeDefinition
    attributes: Tuple[AttributeDefinition, ...] = ()
    description: Optional[str] = None

    def __post_init__(self) -> None:
        where = f"custom activity type {self.api_name!r}" if isinstance(self.api_name, str) else "custom activity type"
        _check_api_name(self.api_name, f"{where}: api_name")
        for field_name in ("name", "trigger_name", "filter_name"):
            _check_text(getattr(self, field_name), f"{where}: {field_name}")
        _check_optional_text(self.description, f"{where}: description")
        if not isinstance(self.primary_attribute, AttributeDefinition):
            raise MarketoConfigurationError(
                f"{where}: primary_attribute is required: an AttributeDefinition (api_name, name, data_type)."
            )
        object.__setattr__(self, "attributes", tuple(self.attributes))
        self._check_attributes(where)

    def _check_attributes(self, where: str) -> None:
        if any(not isinstance(attribute, AttributeDefinition) for attribute in self.attributes):
            raise MarketoConfigurationError(f"{where}: attributes must be AttributeDefinition objects.")
        if len(self.attributes) > settings.MAX_CUSTOM_ACTIVITY_ATTRIBUTES:
            raise MarketoConfigurationError(
                f"{where}: attributes lists {len(self.attributes)}; Marketo allows at most "
                f"{settings.MAX_CUSTOM_ACTIVITY_ATTRIBUTES} per type (1028). Remove some or split the type."
            )
        primaries = [a.api_name for a in self.attributes if a.is_primary]
        if primaries:
            raise MarketoConfigurationError(
                f"{where}: attributes {primaries} set is_primary; put the primary attribute in primary_attribute."
            )
        names = [self.primary_attribute.api_name] + [a.api_name for a in self.attributes]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise MarketoConfigurationError(
                f"{where}: attribute api_name {repeated} appears more than once (primary_attribute "
                "included); every attribute needs its own api_name."
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CustomActivityTypeDefinition":
        """Builds a definition from a mapping: the field names as keys, `primary_attribute` a mapping
        and `attributes` a list of mappings (as in TOML)."""
        if not isinstance(data, Mapping):
            raise MarketoConfigurationError(f"A custom activity type definition must be a table (got {data!r}).")
        converted = dict(data)
        if isinstance(converted.get("primary_attribute"), Mapping):
            converted["primary_attribute"] = AttributeDefinition.from_dict(converted["primary_attribute"])
        if "attributes" in converted:
            converted["attributes"] = tuple(_attribute(item) for item in _list(converted["attributes"], "attributes"))
        return _from_mapping(cls, converted, "custom activity type")

    @classmethod
    def from_toml(cls, path: Union[str, Path], table: Optional[str] = None) -> "CustomActivityTypeDefinition":
        """Reads a definition from a TOML file.

        Args:
            path: The TOML file.
            table: Dotted path of the table holding the definition (e.g. "activity_types.webinar");
                None when the definition is the whole file.

        Example:
            ```toml
            [webinar]
            api_name = "webinarAttendance"
            name = "Attend Webinar"
            trigger_name = "Attends Webinar"
            filter_name = "Attended Webinar"
            primary_attribute = { api_name = "webinarName", name = "Webinar Name", data_type = "string" }

            [[webinar.attributes]]
            api_name = "minutesWatched"
            name = "Minutes Watched"
            data_type = "integer"
            ```
        """
        try:
            with open(path, "rb") as file:
                document: Any = tomllib.load(file)
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise MarketoConfigurationError(f"Cannot read custom activity type definition {path}: {error}") from None
        for key in table.split(".") if table else ():
            if not isinstance(document, Mapping) or key not in document:
                raise MarketoConfigurationError(
                    f"{path} has no table [{table}]; name the table that holds the definition."
                )
            document = document[key]
        return cls.from_dict(document)

    def to_api(self) -> Dict[str, Any]:
        """The type's own fields as Create and Update Custom Activity Type take them."""
        body: Dict[str, Any] = {
            "apiName": self.api_name,
            "name": self.name,
            "triggerName": self.trigger_name,
            "filterName": self.filter_name,
            "primaryAttribute": self.primary_attribute.to_api(),
        }
        if self.description is not None:
            body["description"] = self.description
        return body

    def differing_fields(self, marketo_type: Mapping[str, Any]) -> List[str]:
        """Names of the type's own fields whose value in Marketo differs from this definition
        (the description only when it sets one)."""
        wanted = {"name": self.name, "triggerName": self.trigger_name, "filterName": self.filter_name}
        if self.description is not None:
            wanted["description"] = self.description
        differing = [key for key, value in wanted.items() if (marketo_type.get(key) or "") != value]
        primary = marketo_type.get("primaryAttribute") or {}
        if primary.get("apiName") != self.primary_attribute.api_name or self.primary_attribute.differs_from(primary):
            differing.append("primaryAttribute")
        return differing


def _attribute(item: Any) -> AttributeDefinition:
    return item if isinstance(item, AttributeDefinition) else AttributeDefinition.from_dict(item)


def _list(value: Any, field: str) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise MarketoConfigurationError(f"{field} must be a list of attribute tables (got {value!r}).")
    return value


def _from_mapping(cls: Type[_Definition], data: Any, what: str) -> _Definition:
    if not isinstance(data, Mapping):
        raise MarketoConfigurationError(f"A {what} definition must be a table (got {data!r}).")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    where = f"{what} {data.get('api_name')!r}" if data.get("api_name") else what
    if unknown:
        raise MarketoConfigurationError(f"{where}: unknown keys {unknown}; the keys are {sorted(known)}.")
    required = [name for name, f in known.items()
                if f.default is MISSING and f.default_factory is MISSING and name not in data]
    if required:
        raise MarketoConfigurationError(f"{where}: {', '.join(required)} is required.")
    return cls(**data)


class CustomActivityTypes:
    """The custom activity type calls, one method per call, on the source's client.

    Every method returns Marketo's result: a list of types for `list`, the one type otherwise.
    Marketo's refusals raise `MarketoRequestError` (709 business rule, 1027, 1028, ...) or
    `MarketoNotFound` (610).

    Args:
        client: The client to call with.
    """

    def __init__(self, client: MarketoClient) -> None:
        self.client = client

    def list(self) -> List[Dict[str, Any]]:
        """Every custom activity type (Get Custom Activity Types), each as its approved version
        when it has one, with its `status`."""
        return list(self.client.get(settings.CUSTOM_ACTIVITY_TYPES_PATH).get("result") or [])

    def describe(self, api_name: str, draft: bool = False) -> Dict[str, Any]:
        """One type: its approved version, or its draft with `draft=True`."""
        params = {"draft": "true"} if draft else None
        return self._one(self.client.get(self._path(api_name, "describe"), params))

    def create(self, definition: CustomActivityTypeDefinition) -> Dict[str, Any]:
        """Creates the type as a draft with its primary attribute (add the others with
        `create_attributes`, then `approve`)."""
        return self._one(self.client.post(f"{settings.CUSTOM_ACTIVITY_TYPE_PATH}.json", definition.to_api()))

    def update(self, definition: CustomActivityTypeDefinition) -> Dict[str, Any]:
        """Sets the draft's name, trigger and filter names, description and primary attribute."""
        return self._one(self.client.post(self._path(definition.api_name), definition.to_api()))

    def approve(self, api_name: str) -> Dict[str, Any]:
        """Makes the draft the approved version, the one activities can be added to."""
        return self._one(self.client.post(self._path(api_name, "approve"), {}))

    def discard_draft(self, api_name: str) -> Dict[str, Any]:
        """Drops the draft of an approved type."""
        return self._one(self.client.post(self._path(api_name, "discardDraft"), {}))

    def delete(self, api_name: str) -> Dict[str, Any]:
        """Deletes the type."""
        return self._one(self.client.post(self._path(api_name, "delete"), {}))

    def create_attributes(self, api_name: str, attributes: Sequence[AttributeDefinition]) -> Dict[str, Any]:
        """Adds attributes to the type's draft."""
        body = {"attributes": [_attribute(a).to_api() for a in attributes]}
        return self._one(self.client.post(self._path(api_name, "attributes/create"), body))

    def update_attributes(self, api_name: str, attributes: Sequence[AttributeDefinition]) -> Dict[str, Any]:
        """Replaces attributes of the type's draft, matched by apiName."""
        body = {"attributes": [_attribute(a).to_api() for a in attributes]}
        return self._one(self.client.post(self._path(api_name, "attributes/update"), body))

    def delete_attributes(self, api_name: str, attribute_api_names: Sequence[str]) -> Dict[str, Any]:
        """Removes attributes, by apiName, from the type's draft."""
        names = [_check_api_name(name, "attribute_api_names[]") for name in attribute_api_names]
        body = {"attributes": [{"apiName": name} for name in names]}
        return self._one(self.client.post(self._path(api_name, "attributes/delete"), body))

    @staticmethod
    def _path(api_name: str, action: Optional[str] = None) -> str:
        # Checked because it goes into the URL path.
        base = f"{settings.CUSTOM_ACTIVITY_TYPE_PATH}/{_check_api_name(api_name, 'api_name')}"
        return f"{base}/{action}.json" if action else f"{base}.json"

    @staticmethod
    def _one(answer: Dict[str, Any]) -> Dict[str, Any]:
        results: List[Dict[str, Any]] = answer.get("result") or [{}]
        return results[0]


def ensure_custom_activity_type(client: MarketoClient, definition: CustomActivityTypeDefinition) -> List[str]:
    """Makes the instance's custom activity type match `definition`, and approves it.

    Creates the type when it is missing, updates its own fields when they differ, creates the
    attributes it lacks and updates those that differ, then approves when anything changed or a
    draft was pending. Attributes the instance has beyond the definition are left alone (deleting
    one would drop its values from Marketo's activities); remove them with
    `CustomActivityTypes.delete_attributes` if you mean to. A second call with the same definition
    makes read calls only.

    Args:
        client: The client to call with.
        definition: What the type should look like.

    Returns:
        The changes made, in order, e.g. ["created type webinarAttendance", "created attributes
        minutesWatched", "approved"]; empty when the instance already matched.

    Raises:
        MarketoConfigurationError: The instance has no room for the type (10 types, 1027) or its
            attributes (20, 1028), or another type already uses its display name.
    """
    types = CustomActivityTypes(client)
    existing = {t.get("apiName"): t for t in types.list()}
    _check_name_free(definition, existing)
    listed = existing.get(definition.api_name)
    changes: List[str] = []
    if listed is None:
        _check_room_for_type(definition, existing)
        current = types.create(definition)
        changes.append(f"created type {definition.api_name}")
    elif listed.get("status") in _DRAFT_STATUSES:
        current = types.describe(definition.api_name, draft=True)
    else:
        current = listed
    differing = definition.differing_fields(current)
    if differing:
        types.update(definition)
        changes.append(f"updated {', '.join(differing)}")
    changes += _ensure_attributes(types, definition, current)
    if changes or (listed is not None and listed.get("status") in _DRAFT_STATUSES):
        types.approve(definition.api_name)
        changes.append("approved")
    return changes


def _check_name_free(definition: CustomActivityTypeDefinition, existing: Mapping[Any, Dict[str, Any]]) -> None:
    for api_name, other in existing.items():
        if api_name != definition.api_name and other.get("name") == definition.name:
            raise MarketoConfigurationError(
                f"custom activity type {definition.api_name!r}: name {definition.name!r} is already used by "
                f"type {api_name!r}; choose another display name."
            )


def _check_room_for_type(definition: CustomActivityTypeDefinition, existing: Mapping[Any, Any]) -> None:
    if len(existing) >= settings.MAX_CUSTOM_ACTIVITY_TYPES:
        raise MarketoConfigurationError(
            f"Cannot create custom activity type {definition.api_name!r}: the instance has {len(existing)} "
            f"({', '.join(map(str, existing))}) and Marketo allows {settings.MAX_CUSTOM_ACTIVITY_TYPES} (1027). "
            "Delete one you no longer use, or reuse one."
        )


def _ensure_attributes(
    types: CustomActivityTypes, definition: CustomActivityTypeDefinition, current: Mapping[str, Any]
) -> List[str]:
    present = {a.get("apiName"): a for a in current.get("attributes") or []}
    missing = [a for a in definition.attributes if a.api_name not in present]
    changed = [a for a in definition.attributes if a.api_name in present and a.differs_from(present[a.api_name])]
    if len(present) + len(missing) > settings.MAX_CUSTOM_ACTIVITY_ATTRIBUTES:
        extra = sorted(set(present) - {a.api_name for a in definition.attributes})
        raise MarketoConfigurationError(
            f"custom activity type {definition.api_name!r}: adding {len(missing)} attributes to the "
            f"{len(present)} it has passes Marketo's {settings.MAX_CUSTOM_ACTIVITY_ATTRIBUTES} (1028). "
            f"Attributes it has that the definition lacks: {extra}; delete those you no longer need."
        )
    changes = []
    if missing:
        types.create_attributes(definition.api_name, missing)
        changes.append(f"created attributes {', '.join(a.api_name for a in missing)}")
    if changed:
        types.update_attributes(definition.api_name, changed)
        changes.append(f"updated attributes {', '.join(a.api_name for a in changed)}")
    return changes
