"""How the activities stream groups its types, at most 10 a call (sparse types cost as few
calls as possible)."""

from marketo_source import settings
from marketo_source.chains import groups_of


def test_high_volume_types_are_spread_over_the_fewest_groups() -> None:
    keys = [str(type_id) for type_id in range(1, 26)]
    heavy = {str(type_id) for type_id in settings.HIGH_VOLUME_TYPE_IDS}

    groups = groups_of(keys, 10, heavy)

    assert len(groups) == 3, "no more groups than 25 types need"
    assert sorted(key for group in groups for key in group) == sorted(keys), "every type read once"
    assert all(len(group) <= 10 for group in groups)
    per_group = [len(heavy.intersection(group)) for group in groups]
    assert max(per_group) - min(per_group) <= 1, f"high-volume types unevenly spread: {groups}"
    assert all(group == sorted(group, key=int) for group in groups), "each call lists its ids in order"


def test_without_high_volume_types_groups_follow_the_id_order() -> None:
    keys = [str(type_id) for type_id in range(100, 125)]

    assert groups_of(keys, 10) == [keys[:10], keys[10:20], keys[20:]]
    assert groups_of(["7"], 10, {"7"}) == [["7"]]
    assert groups_of([], 10) == []
