"""What the instance says about itself: activity types, custom activity types and lead fields.

Each is fetched at most once per run and shared by every resource that needs it.
"""

from functools import cached_property
from typing import Any, Dict, List, Optional

from marketo_source import settings
from marketo_source.client import MarketoClient
from marketo_source.errors import MarketoConfigurationError


class Catalog:
    """Lazily fetched metadata of one Marketo instance, read from dlt's extract thread."""

    def __init__(self, client: MarketoClient) -> None:
        self._client = client

    def _fetch(self, path: str) -> List[Dict[str, Any]]:
        return list(self._client.get(path).get("result") or [])

    @cached_property
    def activity_types(self) -> Dict[int, Dict[str, Any]]:
        """Every activity type the instance lists, custom ones included, by id."""
        return {t["id"]: t for t in self._fetch(settings.ACTIVITY_TYPES_PATH)}

    @cached_property
    def custom_activity_types(self) -> List[Dict[str, Any]]:
        return self._fetch(settings.CUSTOM_ACTIVITY_TYPES_PATH)

    @cached_property
    def lead_fields(self) -> List[str]:
        """REST names of every lead field (from Describe Lead2)."""
        described = self._fetch(settings.LEAD_DESCRIBE_PATH)
        return [f["name"] for entry in described for f in entry.get("fields") or () if f.get("name")]

    def activity_type_ids_to_read(self, requested: Optional[List[int]]) -> List[int]:
        """The types the activities stream reads: those requested, or every type without a stream of its own."""
        known = self.activity_types
        if requested is None:
            return sorted(t for t in known if t not in settings.DEDICATED_STREAM_TYPE_IDS)
        unknown = [t for t in requested if t not in known]
        if unknown:
            raise MarketoConfigurationError.of(
                "activity_type_ids", f"{unknown} are not activity types of this instance",
                f"remove them or leave the setting unset; its types are {sorted(known)}",
            )
        return requested

    def lead_change_fields_to_read(self, requested: Optional[List[str]]) -> List[str]:
        known = self.lead_fields
        if requested is None:
            return sorted(known)
        known_lower = {name.lower() for name in known}
        unknown = [f for f in requested if f.lower() not in known_lower]
        if unknown:
            raise MarketoConfigurationError.of(
                "lead_change_fields", f"{unknown} are not lead fields of this instance",
                "use REST API names from Describe Lead2 (e.g. firstName), or leave the setting unset to read "
                "every field",
            )
        return requested
