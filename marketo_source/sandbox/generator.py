"""Deterministic data generator: the same DataSpec always yields the same leads, lists and activities."""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator

from .catalog import (
    CHANGE_DATA_VALUE,
    DELETE_LEAD,
    LEAD_FIELDS_BY_NAME,
    NEW_LEAD,
    STANDARD_TYPES_BY_ID,
    AttributeDef,
    CustomTypeVersion,
)
from .records import Activity, FieldChange

FIRST_LEAD_ID = 1001
FIRST_LIST_ID = 5001
VISIT_WEBPAGE = 1
MALFORMED_KINDS = ("wrong_type", "no_attributes", "no_activity_date")
FIRST_ACTIVITY_ID = 2**31 + 1000  # ids above int32 catch sources that store them in 32 bits
ADMIN_USER = "apiuser@sandbox.local"
MS_PER_DAY = 86_400_000

# Relative frequency of the types that fill the log besides New Lead and Delete Lead.
TYPE_WEIGHTS: dict[int, int] = {
    1: 26, 2: 3, 3: 6, 6: 14, 7: 13, 8: 1, 9: 1, 10: 9, 11: 5, CHANGE_DATA_VALUE: 8, 22: 5, 24: 2, 46: 2, 104: 2,
}
CUSTOM_TYPE_WEIGHT = 2
CAMPAIGN_TYPES = frozenset({6, 7, 8, 9, 10, 11, CHANGE_DATA_VALUE, 22, 24, 46, 104})
CAMPAIGN_IDS = (1001, 1002, 1017, 2044, 5034, 7311)
SEND_EMAIL = 6
EMAIL_DELIVERED = 7
OPEN_EMAIL = 10
CLICK_EMAIL = 11
LEAD_EVENT_SHARE = 1 / 40  # of added activities, the share of New Leads and, again, of Delete Leads

FIRST_NAMES = ("Anna", "Jürgen", "Zoë", "José", "Søren", "Mei", "Hiroshi", "Émilie", "Łukasz", "Grace", "Omar")
LAST_NAMES = ("Müller", "García", "Øster", "中村", "Dubois", "Kowalski", "O'Brien", "Smith", "Ngô", "Björk")
CITIES = ("東京", "München", "São Paulo", "Zürich", "Paris", "Kraków", "New York", "Reykjavík", "Chicago")
COUNTRIES = ("Japan", "Germany", "Brazil", "Switzerland", "France", "Poland", "USA", "Iceland")
COMPANIES = ("Café Lumière", "Acme Corp", "Müller GmbH", "東京 Systems", "Zoë & Co 🚀", "Globex", "Initech")
TITLES = ("CEO", "Head of Growth 🚀", "Ingénieure", "Marketing Manager", "CTO", "Data Engineer")
STATUSES = ("Open", "Contacted", "Qualified", "Nurture", "Disqualified")
LEAD_SOURCES = ("Website", "Trade Show", "Webinar", "List Import", "Partner")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) Gecko/20100101 Firefox/127.0",
)
URLS = ("https://www.example.com/pricing", "https://www.example.com/café/menu",
        "https://example.jp/東京/events", "https://www.example.com/blog/why-📈-matters", "https://www.example.com/")
WORDS = ("Spring Newsletter", "Webinar: Data 101", "Produkt-Update März", "東京 Summit", "Café Chat ☕", "Q3 Nurture")


SecondsRange = tuple[float, float]

EMAIL_FUNNEL: dict[int, tuple[int, float, SecondsRange]] = {
    SEND_EMAIL: (EMAIL_DELIVERED, 13 / 14, (1, 600)),
    EMAIL_DELIVERED: (OPEN_EMAIL, 9 / 13, (60, 43_200)),
    OPEN_EMAIL: (CLICK_EMAIL, 5 / 9, (5, 3600)),
}
"""Email step -> (the step that may follow it, how likely, its delay in seconds).

An email reaches a lead in steps: Send Email, then Email Delivered, Open Email, Click Email, each for
the same email (Mailing ID) and lead and dated after the step before. The probabilities keep the
steps' shares of the log as TYPE_WEIGHTS gives them (14 : 13 : 9 : 5). The generator dates every step
in the UTC week (from Monday) of its Send Email, so that counts per week form a funnel; a step that
would fall later is not generated, as if the lead never took it.
"""
FOLLOWING_STEPS = frozenset(following for following, _, _ in EMAIL_FUNNEL.values())


@dataclass(frozen=True)
class Lateness:
    """How long after its activityDate an added activity is committed, per activity type.

    Marketo records some activities late: Send Email only once the mail has left its servers,
    minutes to an hour after the activityDate. Each late activity draws its lateness uniformly from
    its type's range, in whole seconds (activityDate has none finer).

    Attributes:
        default: (min_s, max_s) for every type not in `by_type`.
        by_type: ((type_id, (min_s, max_s)), ...); a tuple rather than a dict, so DataSpec stays hashable.
    """

    default: SecondsRange = (0, 5)
    by_type: tuple[tuple[int, SecondsRange], ...] = ((SEND_EMAIL, (0, 3600)), (EMAIL_DELIVERED, (0, 3600)))

    def __post_init__(self) -> None:
        for low, high in (self.default, *(seconds for _, seconds in self.by_type)):
            if not 0 <= low <= high:
                raise ValueError(f"a lateness range needs 0 <= min_s <= max_s, not ({low}, {high})")

    def range_for(self, type_id: int) -> SecondsRange:
        """The (min_s, max_s) range of a type."""
        return next((seconds for listed, seconds in self.by_type if listed == type_id), self.default)


@dataclass(frozen=True)
class DataSpec:
    """What the generator produces.

    Attributes:
        seed: Seed of every random choice; same spec, same data.
        leads: Number of leads; each gets a New Lead (12) activity early in the span.
        activities: Total number of records in the initial log (New Lead records included).
        days: Length of the span the initial activities are spread over.
        start_date: ISO start of the span; default today UTC midnight minus `days`.
        custom_types: Seed the two custom types (Attend Conference, Product Usage) and their activities.
        lists: Number of ordinary static lists (one more list of `big_list_size` members is always added).
        big_list_size: Member count of the list too large for listId filters (Marketo refuses 10,000 or more).
        deleted_leads: Number of leads deleted in the last fifth of the span; default leads // 50, at least 1.
        auto_add: (every_n_calls, new, late): while serving, every n REST calls commit activities as
            `MarketoSandbox.add_activities(new, late)` does, so they arrive while a client is reading.
        lateness: How late `add_activities` commits its late activities, per type.
        malformed: Number of initial records that break Marketo's schema, in turn: a value that
            does not fit its attribute's data type, no attribute list, no activityDate.
        unkeyed: Number of initial records sent without marketoGUID, which no merge can key.
        max_custom_types: Custom activity types the instance may hold, seeded ones included (Marketo: 10);
            raise it to benchmark instances with many activity types.
    """

    seed: int = 1
    leads: int = 200
    activities: int = 5000
    days: int = 30
    start_date: str | None = None
    custom_types: bool = True
    lists: int = 3
    big_list_size: int = 10_000
    deleted_leads: int | None = None
    auto_add: tuple[int, int, int] | None = None
    malformed: int = 0
    unkeyed: int = 0
    max_custom_types: int = 10
    lateness: Lateness = Lateness()

    def start_ms(self) -> int:
        """Epoch milliseconds of the span's start."""
        if self.start_date:
            start = datetime.fromisoformat(self.start_date)
        else:
            midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
            start = midnight - timedelta(days=self.days)
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        return int(start.timestamp() * 1000)

    def deleted_lead_count(self) -> int:
        """How many leads get deleted."""
        wanted = self.deleted_leads if self.deleted_leads is not None else max(1, self.leads // 50)
        return min(wanted, self.leads)


DEMO_DATA = DataSpec(days=13)
"""The demo's data (`pipelines/marketo_pipeline.py --sandbox`): 13 days, within every retention
window, so a first run reports no gap."""


@dataclass
class Lead:
    """A lead: its field values at creation, its current values, and whether it was deleted."""

    id: int
    initial: dict[str, str]
    current: dict[str, str]
    deleted: bool = False


@dataclass(frozen=True)
class StaticList:
    """A static list; `members` filters activities by listId."""

    id: int
    name: str
    members: frozenset[int]


@functools.lru_cache(maxsize=4096)
def _day_prefix(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, timezone.utc).strftime("%Y-%m-%dT")


def week_end_ms(date_ms: int) -> int:
    """Epoch milliseconds of the Monday 00:00 UTC after `date_ms` (day 0, 1970-01-01, was a Thursday)."""
    day = date_ms // MS_PER_DAY
    return (day - (day + 3) % 7 + 7) * MS_PER_DAY


def format_date(ms: int, colon_free_offset: bool) -> str:
    """Render an activityDate in one of the two styles Marketo uses (`Z` or `+0000`)."""
    day, second = divmod(ms // 1000, 86_400)
    hour, rest = divmod(second, 3600)
    minute, second = divmod(rest, 60)
    offset = "+0000" if colon_free_offset else "Z"
    return f"{_day_prefix(day)}{hour:02d}:{minute:02d}:{second:02d}{offset}"


class ValueMaker:
    """Random attribute values, by attribute name where realism matters, else by data type."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.by_type: dict[str, Callable[[], Any]] = {
            "string": lambda: rng.choice(WORDS),
            "text": lambda: f"FirstName={rng.choice(FIRST_NAMES)}&Company={rng.choice(COMPANIES)}",
            "integer": self.integer,
            "float": lambda: round(rng.uniform(0, 10), 2),
            "currency": lambda: round(rng.uniform(10, 5000), 2),
            "boolean": lambda: rng.random() < 0.5,
            "date": lambda: f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "datetime": lambda: format_date(rng.randrange(1_700_000_000, 1_800_000_000) * 1000, False),
            "email": lambda: f"{rng.choice(FIRST_NAMES).lower()}@example.com",
            "phone": lambda: f"+49 30 {rng.randint(1000000, 9999999)}",
            "link": lambda: rng.choice(URLS),
        }
        self.by_name: dict[str, Callable[[], Any]] = {
            "Client IP Address": lambda: f"{rng.getrandbits(7) + 1}.{rng.getrandbits(8)}.{rng.getrandbits(8)}.7",
            "Query Parameters": lambda: self.sometimes("utm_source=newsletter&utm_campaign=spring", 0.4),
            "Referrer URL": lambda: self.sometimes(rng.choice(URLS), 0.6),
            "Search Engine": lambda: self.sometimes("www.google.com", 0.2),
            "Search Query": lambda: self.sometimes("café crm", 0.1),
            "User Agent": lambda: rng.choice(USER_AGENTS),
            "Webpage URL": lambda: rng.choice(URLS),
            "Link": lambda: rng.choice(URLS),
            "Link ID": lambda: str(rng.randint(100, 999)),
            "Device": lambda: rng.choice(("iPhone", "Desktop", "Android")),
            "Platform": lambda: rng.choice(("iOS", "Windows", "macOS", "Android")),
            "Test Variant": lambda: self.sometimes(self.integer(), 0.2),
            "Category": lambda: "1", "Subcategory": lambda: "4",
            "Details": lambda: "550 5.1.1 user unknown — Benutzer unbekannt",
            "Email": lambda: f"{rng.choice(FIRST_NAMES).lower()}@example.com",
            "Form Name": lambda: self.sometimes("Demo Request – Formulaire", 0.5),
            "Lead Source": lambda: rng.choice(LEAD_SOURCES),
            "List Name": lambda: self.sometimes("Imported März", 0.2),
            "SFDC Type": lambda: "Lead", "Source Type": lambda: rng.choice(("New lead", "Web form fillout")),
            "API Method Name": lambda: self.sometimes("syncLead", 0.5),
            "Modifying User": lambda: ADMIN_USER,
            "Request Id": lambda: f"{rng.getrandbits(32):x}#{rng.getrandbits(44):x}",
            "Remove from CRM": lambda: rng.choice(("true", "false")),
            "Reason": lambda: rng.choice(("Changed by flow", "Web form fillout", "Score rule")),
            "Source": lambda: rng.choice(("Marketo Flow Action", "Web service API", "Web form fillout")),
            "Type": lambda: rng.choice(("Web", "Email", "Milestone")),
            "Description": lambda: f"Visited {rng.choice(URLS)}",
            "Acquired By": lambda: rng.choice(("true", "false")),
            "Old Status": lambda: rng.choice(STATUSES), "New Status": lambda: rng.choice(STATUSES),
        }

    def integer(self) -> int | str:
        """An integer, sometimes sent as a numeric string (Marketo does both)."""
        value = int(self.rng.random() * 99_999) + 1  # randint is several times slower
        return str(value) if self.rng.random() < 0.3 else value

    def sometimes(self, value: Any, probability: float) -> Any:
        """`value` with the given probability, else None (an empty attribute)."""
        return value if self.rng.random() < probability else None

    def attributes(self, definitions: Iterable[AttributeDef]) -> tuple[dict[str, Any], ...]:
        """Render a record's attribute list, leaving empty attributes out as Marketo does."""
        rendered = []
        for definition in definitions:
            make = self.by_name.get(definition.name) or self.by_type[definition.data_type]
            value = make()
            if value is None:
                continue
            entry: dict[str, Any] = {"name": definition.name, "value": value}
            if definition.api_name:
                entry["apiName"] = definition.api_name
            rendered.append(entry)
        return tuple(rendered)


LEAD_VALUE_POOLS: dict[str, tuple[str, ...]] = {
    "firstName": FIRST_NAMES, "lastName": LAST_NAMES, "company": COMPANIES, "title": TITLES, "city": CITIES,
    "country": COUNTRIES, "leadStatus": STATUSES, "leadSource": LEAD_SOURCES, "rating": ("Hot", "Warm", "Cold"),
    "preferredLanguage": ("de", "fr", "ja", "en", "pt-BR"), "industry": ("Software", "Retail", "Gastronomie"),
    "phone": ("+1 312 555 0100", "+81 3-1234-5678", "+49 89 123456"), "leadScore": ("0", "10", "25", "40", "85"),
}
CHANGEABLE_FIELDS = tuple(LEAD_VALUE_POOLS)


class DataGenerator:
    """Produces the initial data of a DataSpec and, later, more activities from the same random stream."""

    def __init__(self, spec: DataSpec, custom_types: dict[int, CustomTypeVersion]) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.start_ms = spec.start_ms()
        self.values = ValueMaker(self.rng)
        self.custom_types = custom_types
        self.next_id = FIRST_ACTIVITY_ID
        self.leads = self._make_leads()
        self.alive = list(self.leads)
        self.lists = self._make_lists()
        self.assets = {type_id: self._asset_pool(type_id) for type_id in STANDARD_TYPES_BY_ID}
        weights = dict(TYPE_WEIGHTS)
        if spec.custom_types:
            weights.update(dict.fromkeys(custom_types, CUSTOM_TYPE_WEIGHT))
        self.type_wheel = [type_id for type_id, weight in weights.items() for _ in range(weight)]
        # The initial log draws no later email step from the wheel: each comes after its Send Email.
        self.first_step_wheel = [type_id for type_id in self.type_wheel if type_id not in FOLLOWING_STEPS]
        self.due_steps: list[tuple[int, int, Activity]] = []
        """Heap of (due ms, plan number, email step): steps whose following step the initial log owes."""
        self.plan_numbers = itertools.count()
        self.awaiting: dict[int, deque[Activity]] = {following: deque() for following in FOLLOWING_STEPS}
        """Following step type -> email steps without it, oldest first, which added activities may follow."""

    def _make_leads(self) -> dict[int, Lead]:
        return {lead_id: self._make_lead(lead_id) for lead_id in range(FIRST_LEAD_ID, FIRST_LEAD_ID + self.spec.leads)}

    def _make_lead(self, lead_id: int) -> Lead:
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        initial = {"firstName": first, "lastName": last, "email": f"lead{lead_id}@example.com",
                   "leadSource": self.rng.choice(LEAD_SOURCES), "leadScore": "0"}
        if self.rng.random() < 0.6:
            initial["company"] = self.rng.choice(COMPANIES)
            initial["city"] = self.rng.choice(CITIES)
        return Lead(lead_id, initial, dict(initial))

    def _make_lists(self) -> dict[int, StaticList]:
        lead_ids = list(self.leads)
        lists = {}
        for index in range(self.spec.lists):
            members = frozenset(self.rng.sample(lead_ids, len(lead_ids) // 5))
            list_id = FIRST_LIST_ID + index
            lists[list_id] = StaticList(list_id, f"{self.rng.choice(WORDS)} #{index + 1}", members)
        big_id = FIRST_LIST_ID + self.spec.lists
        big_size = max(self.spec.big_list_size, len(lead_ids))
        lists[big_id] = StaticList(big_id, "All Contacts (imported)",
                                   frozenset(range(FIRST_LEAD_ID, FIRST_LEAD_ID + big_size)))
        return lists

    def _asset_pool(self, type_id: int) -> list[tuple[int, str]]:
        if type_id == 24:
            return [(static_list.id, static_list.name) for static_list in self.lists.values()]
        name = STANDARD_TYPES_BY_ID[type_id].name
        return [(self.rng.randint(1000, 99999), f"{name} – {word}") for word in WORDS]

    def initial_activities(self) -> Iterator[Activity]:
        """Yield the initial log in activityDate order: New Leads first, deletions late in the span."""
        start = self.start_ms
        span = self.spec.days * MS_PER_DAY
        lead_dates = self._sorted_dates(start, start + span // 10, len(self.leads))
        for lead_id, date_ms in zip(self.leads, lead_dates, strict=True):
            yield self._new_lead(lead_id, date_ms)
        others = self._sorted_dates(start + span // 10, start + span, max(0, self.spec.activities - len(self.leads)))
        deletions = self._deletion_plan(others, start + span * 4 // 5)
        malformed = self._malformed_plan(len(others), set(deletions))
        for position, date_ms in enumerate(others):
            deleted_lead_id = deletions.get(position)
            if deleted_lead_id is not None:
                yield self._delete_lead(deleted_lead_id, date_ms)
            elif position in malformed:
                yield self._malformed(self._activity(malformed[position][0], date_ms), malformed[position][1])
            else:
                yield self._initial_activity(date_ms)

    def _initial_activity(self, date_ms: int) -> Activity:
        """The email step due by `date_ms` if one is, else an activity of a type from the wheel."""
        step = self._due_step(date_ms)
        activity = self._activity(self.rng.choice(self.first_step_wheel), date_ms) if step is None \
            else self._follow(step, date_ms)
        self._track_email_step(activity, initial=True)
        return activity

    def _track_email_step(self, step: Activity, initial: bool) -> None:
        """Plan what follows an email step: in the initial log its next step, drawn by EMAIL_FUNNEL, or
        nothing; either way, unless planned, added activities may follow it later."""
        funnel = EMAIL_FUNNEL.get(step.type_id)
        if funnel is None:
            return
        following, probability, delay_s = funnel
        if initial and self.rng.random() < probability:
            due_ms = step.date_ms + round(self.rng.uniform(*delay_s)) * 1000
            heapq.heappush(self.due_steps, (due_ms, next(self.plan_numbers), step))
        else:
            self.awaiting[following].append(step)

    def _due_step(self, date_ms: int) -> Activity | None:
        """The email step whose next step is due first, by `date_ms`, among those that may still take it."""
        while self.due_steps and self.due_steps[0][0] <= date_ms:
            step = heapq.heappop(self.due_steps)[2]
            if self._may_follow(step, date_ms):
                return step
        return None

    def _awaiting_step(self, following: int, date_ms: int) -> Activity | None:
        """The oldest email step without a `following` step that may take one dated `date_ms`.

        Steps whose week is over by `date_ms`, or whose lead is deleted, are dropped for good: added
        activities are dated near the wall clock, which only advances.
        """
        waiting = self.awaiting[following]
        while waiting and (week_end_ms(waiting[0].date_ms) <= date_ms or self.leads[waiting[0].lead_id].deleted):
            waiting.popleft()
        for index, step in enumerate(waiting):
            if self._may_follow(step, date_ms):
                del waiting[index]
                return step
        return None

    def _may_follow(self, step: Activity, date_ms: int) -> bool:
        """Whether an email step may be followed at `date_ms`: later, in its week, its lead not deleted."""
        return step.date_ms < date_ms < week_end_ms(step.date_ms) and not self.leads[step.lead_id].deleted

    def _follow(self, step: Activity, date_ms: int) -> Activity:
        """The email step after `step`, of the same email (Mailing ID) to the same lead."""
        following = EMAIL_FUNNEL[step.type_id][0]
        attributes = self.values.attributes(STANDARD_TYPES_BY_ID[following].attributes)
        return self._record(following, step.lead_id, date_ms, attributes, (step.primary_id, step.primary_value))

    def _malformed_plan(self, count: int, taken: set[int]) -> dict[int, tuple[int, str]]:
        """Position -> (type id, kind) of the records to break; Visit Webpage has a boolean attribute to break."""
        free = [position for position in range(count) if position not in taken]
        kinds = [MALFORMED_KINDS[n % len(MALFORMED_KINDS)] for n in range(self.spec.malformed)]
        kinds += ["no_guid"] * self.spec.unkeyed
        positions = sorted(self.rng.sample(free, min(len(kinds), len(free))))
        # With fewer free positions than kinds, the kinds left over are not planted.
        return {position: (VISIT_WEBPAGE, kind) for position, kind in zip(positions, kinds, strict=False)}

    @staticmethod
    def _malformed(activity: Activity, kind: str) -> Activity:
        if kind != "wrong_type":
            return replace(activity, malformed=kind)
        broken = (
            {"name": "Personalized URL", "value": "n/a"},
            *(a for a in activity.attributes if a["name"] != "Personalized URL"),
        )
        return replace(activity, attributes=broken)

    def more_activities(self, new: int, late: int, now_ms: int, lateness_s: float | None = None) -> list[Activity]:
        """Activities to commit at `now_ms`: `new` dated `now_ms`, then `late` dated some time before it.

        Types come from the type wheel, except that about one in 40 of each kind is the New Lead of a
        brand-new lead and about one in 40 the Delete Lead of an alive lead (never the last one), so lead
        changes and deleted leads get new and late commits too. An Email Delivered, Open Email or Click
        Email follows an earlier step of the same email to the same lead in the same week (EMAIL_FUNNEL);
        when no email awaits it, a Send Email comes instead.

        Args:
            new: How many activities to commit on time.
            late: How many to commit late: each dated its type's lateness (DataSpec.lateness) before `now_ms`.
            now_ms: The commit time, in whole seconds.
            lateness_s: The lateness of every late activity instead of its type's range (rounded to whole seconds).
        """
        on_time = [self._added_activity(now_ms, lambda type_id: 0) for _ in range(new)]
        lateness = self._lateness_s if lateness_s is None else lambda type_id: lateness_s
        return on_time + [self._added_activity(now_ms, lateness) for _ in range(late)]

    def _lateness_s(self, type_id: int) -> float:
        return self.rng.uniform(*self.spec.lateness.range_for(type_id))

    def _added_activity(self, now_ms: int, lateness_s: Callable[[int], float]) -> Activity:
        type_id = self._added_type()
        date_ms = self._added_date(type_id, now_ms, lateness_s)
        if type_id == NEW_LEAD:
            return self._new_lead(self._add_lead(), date_ms)
        if type_id == DELETE_LEAD:
            return self._delete_lead(self.rng.choice(self.alive), date_ms)
        step = self._awaiting_step(type_id, date_ms) if type_id in FOLLOWING_STEPS else None
        if step is not None:
            activity = self._follow(step, date_ms)
        else:
            if type_id in FOLLOWING_STEPS:  # no email awaits this step: the activity starts one instead
                type_id = SEND_EMAIL
                date_ms = self._added_date(type_id, now_ms, lateness_s)
            activity = self._activity(type_id, date_ms)
        self._track_email_step(activity, initial=False)
        return activity

    @staticmethod
    def _added_date(type_id: int, now_ms: int, lateness_s: Callable[[int], float]) -> int:
        return now_ms - round(lateness_s(type_id)) * 1000  # whole seconds, like every activityDate

    def _added_type(self) -> int:
        draw = self.rng.random()
        if draw < LEAD_EVENT_SHARE:
            return NEW_LEAD
        if draw < 2 * LEAD_EVENT_SHARE and len(self.alive) > 1:
            return DELETE_LEAD
        return self.rng.choice(self.type_wheel)

    def _add_lead(self) -> int:
        """Create a lead after the initial ones (lead ids stay consecutive: deleted leads are kept)."""
        lead_id = FIRST_LEAD_ID + len(self.leads)
        self.leads[lead_id] = self._make_lead(lead_id)
        self.alive.append(lead_id)
        return lead_id

    def _sorted_dates(self, low_ms: int, high_ms: int, count: int) -> list[int]:
        # Whole seconds: activityDate has no sub-second part, so ordering must not depend on one.
        low_s, high_s = low_ms // 1000, max(low_ms // 1000 + 1, high_ms // 1000)
        width, random_ = high_s - low_s, self.rng.random
        return sorted((low_s + int(random_() * width)) * 1000 for _ in range(count))

    def _deletion_plan(self, dates: list[int], from_ms: int) -> dict[int, int]:
        candidates = [position for position, date_ms in enumerate(dates) if date_ms >= from_ms]
        count = min(self.spec.deleted_lead_count(), len(candidates), len(self.leads) - 1)
        victims = self.rng.sample(list(self.leads), max(0, count))
        return dict(zip(sorted(self.rng.sample(candidates, len(victims))), victims, strict=True))

    def next_identity(self) -> tuple[int, str]:
        """A fresh (id, marketoGUID) pair for a new activity."""
        # Marketo activity ids are not unique; now and then two records share one.
        if self.rng.random() >= 0.002:
            self.next_id += 1 + self.rng.getrandbits(1)
        bits = self.rng.getrandbits(128)
        guid = f"{bits >> 96:08x}-{bits >> 80 & 0xFFFF:04x}-{bits >> 64 & 0xFFFF:04x}-" \
               f"{bits >> 48 & 0xFFFF:04x}-{bits & 0xFFFFFFFFFFFF:012x}"
        return self.next_id, guid

    def _record(self, type_id: int, lead_id: int, date_ms: int, attributes: tuple[dict[str, Any], ...],
                primary: tuple[int | None, str | None] = (None, None), change: FieldChange | None = None) -> Activity:
        activity_id, guid = self.next_identity()
        campaign = self.rng.choice(CAMPAIGN_IDS) if type_id in CAMPAIGN_TYPES and self.rng.random() < 0.7 else None
        return Activity(activity_id, guid, lead_id, date_ms, format_date(date_ms, self.rng.random() < 0.3), type_id,
                        attributes, campaign, primary[0], primary[1], change)

    def _new_lead(self, lead_id: int, date_ms: int) -> Activity:
        definition = STANDARD_TYPES_BY_ID[NEW_LEAD]
        attributes = self.values.attributes(definition.attributes[1:])
        created = {"name": "Created Date", "value": format_date(date_ms, False)[:10]}
        return self._record(NEW_LEAD, lead_id, date_ms, (created, *attributes))

    def _delete_lead(self, lead_id: int, date_ms: int) -> Activity:
        lead = self.leads[lead_id]
        lead.deleted = True
        self.alive.remove(lead_id)
        attributes = self.values.attributes(STANDARD_TYPES_BY_ID[DELETE_LEAD].attributes)
        name = f"{lead.current.get('lastName', '')}, {lead.current.get('firstName', '')}"
        return self._record(DELETE_LEAD, lead_id, date_ms, attributes, (lead_id, name))

    def _activity(self, type_id: int, date_ms: int) -> Activity:
        lead_id = self.rng.choice(self.alive)
        if type_id == CHANGE_DATA_VALUE:
            return self._change_data_value(lead_id, date_ms)
        custom = self.custom_types.get(type_id)
        if custom is not None:
            value = self.values.by_type["string"]()
            return self._record(type_id, lead_id, date_ms, self.values.attributes(custom.attributes.values()),
                                (None, value))
        attributes = self.values.attributes(STANDARD_TYPES_BY_ID[type_id].attributes)
        return self._record(type_id, lead_id, date_ms, attributes, self.rng.choice(self.assets[type_id]))

    def _change_data_value(self, lead_id: int, date_ms: int) -> Activity:
        lead = self.leads[lead_id]
        name = self.rng.choice(CHANGEABLE_FIELDS)
        old_value = lead.current.get(name)
        new_value = self.rng.choice([value for value in LEAD_VALUE_POOLS[name] if value != old_value])
        lead.current[name] = new_value
        lead_field = LEAD_FIELDS_BY_NAME[name]
        change = FieldChange(lead_field, new_value, old_value, self.values.by_name["Reason"](),
                             self.values.by_name["Source"]())
        attributes = [{"name": "New Value", "value": new_value}]
        if old_value is not None:
            attributes.append({"name": "Old Value", "value": old_value})
        attributes += [{"name": "Reason", "value": change.reason}, {"name": "Source", "value": change.source}]
        return self._record(CHANGE_DATA_VALUE, lead_id, date_ms, tuple(attributes),
                            (lead_field.id, lead_field.display_name), change)
