"""An instance with many activity types, built through the sandbox's REST API as a Marketo admin would.

Each type is a custom activity type (created, given attributes of six data types, approved) and
its activities are added with Add Custom Activities, 300 a call. Record counts follow Zipf's law
(the type of rank r gets a share proportional to 1/r), so a few types are dense and most sparse.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, List, Sequence

import requests

EXTERNAL = "/rest/v1/activities/external"
PER_CALL = 300
FIRST_LEAD_ID = 1001
ATTRIBUTES = (("label", "string"), ("amount", "integer"), ("score", "float"), ("flag", "boolean"),
              ("seenAt", "datetime"), ("day", "date"))


def _post(session: requests.Session, url: str, body: Any) -> List[Dict[str, Any]]:
    answer = session.post(url, json=body, timeout=120).json()
    if not answer.get("success"):
        raise RuntimeError(f"{url} failed: {answer.get('errors')}")
    return answer["result"]


def _attribute(api_name: str, data_type: str) -> Dict[str, str]:
    return {"apiName": api_name, "name": api_name.title(), "dataType": data_type}


def create_types(session: requests.Session, base_url: str, count: int) -> Dict[str, int]:
    """Creates and approves `count` custom activity types.

    Args:
        session: A session holding an access token.
        base_url: The sandbox's base URL.
        count: Types to create (the sandbox must allow that many: `max_custom_types`).

    Returns:
        Type id per apiName, in creation order.
    """
    ids: Dict[str, int] = {}
    for n in range(count):
        api_name = f"benchType{n:03d}"
        ids[api_name] = _post(session, f"{base_url}{EXTERNAL}/type.json", {
            "apiName": api_name, "name": f"Bench Type {n:03d}", "triggerName": f"Does bench {n}",
            "filterName": f"Did bench {n}", "primaryAttribute": _attribute("subject", "string")})[0]["id"]
        _post(session, f"{base_url}{EXTERNAL}/type/{api_name}/attributes/create.json",
              {"attributes": [_attribute(name, data_type) for name, data_type in ATTRIBUTES]})
        _post(session, f"{base_url}{EXTERNAL}/type/{api_name}/approve.json", {})
    return ids


def _value(data_type: str, rng: random.Random) -> Any:
    values: Dict[str, Callable[[], Any]] = {
        "string": lambda: rng.choice(("Webinar", "Café ☕", "東京 Summit", "Trial")),
        "integer": lambda: rng.randint(1, 99_999),
        "float": lambda: round(rng.uniform(0, 100), 2),
        "boolean": lambda: rng.random() < 0.5,
        "datetime": lambda: f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
        "date": lambda: f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    }
    return values[data_type]()


def activity_items(api_names: Sequence[str], total: int, leads: int, start: datetime, end: datetime,
                   seed: int) -> Iterator[Dict[str, Any]]:
    """Add Custom Activities items in date order, types drawn with Zipf weights.

    Args:
        api_names: The types, densest first.
        total: Items to make.
        leads: Leads to spread them over (ids from 1001).
        start: Date of the first item.
        end: Date after the last item.
        seed: Seed of every random choice.
    """
    rng = random.Random(seed)
    types = rng.choices(api_names, weights=[1 / rank for rank in range(1, len(api_names) + 1)], k=total)
    step = (end - start) / max(1, total)
    for n, api_name in enumerate(types):
        yield {
            "apiName": api_name,
            "leadId": FIRST_LEAD_ID + rng.randrange(leads),
            "activityDate": (start + step * n).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "primaryAttributeValue": _value("string", rng),
            "attributes": [{"apiName": name, "value": _value(data_type, rng)} for name, data_type in ATTRIBUTES],
        }


def add_activities(session: requests.Session, base_url: str, items: Iterator[Dict[str, Any]]) -> int:
    """Posts the items 300 a call; returns how many were added (every one must be)."""
    added, batch = 0, []
    for item in items:
        batch.append(item)
        if len(batch) == PER_CALL:
            added += _add_batch(session, base_url, batch)
            batch = []
    return added + (_add_batch(session, base_url, batch) if batch else 0)


def _add_batch(session: requests.Session, base_url: str, batch: List[Dict[str, Any]]) -> int:
    results = _post(session, f"{base_url}{EXTERNAL}.json", {"input": batch})
    skipped = [r for r in results if r.get("status") != "added"]
    if skipped:
        raise RuntimeError(f"{len(skipped)} activities skipped, e.g. {skipped[0]}")
    return len(results)


def populate(session: requests.Session, base_url: str, types: int, activities: int, leads: int,
             start_date: str, days: int, seed: int = 1) -> List[int]:
    """Creates `types` custom types and `activities` activities of them, dated across the span.

    The span's first tenth holds the sandbox's New Lead records; these activities fill the rest.

    Returns:
        The ids of the new types.
    """
    start = datetime.fromisoformat(start_date.replace("Z", "+00:00")).astimezone(timezone.utc)
    span = timedelta(days=days)
    ids = create_types(session, base_url, types)
    items = activity_items(list(ids), activities, leads, start + span / 10, start + span, seed)
    added = add_activities(session, base_url, items)
    if added != activities:
        raise RuntimeError(f"added {added} activities, wanted {activities}")
    return list(ids.values())
