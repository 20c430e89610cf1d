"""Paging in both token orders: block scanning, resume, late commits and token checks (behaviour 5).

Marketo does not document whether a continuation token marks a place in the commit log ("commit")
or in activityDate order ("date"); most tests run under both, the resume tests state where they differ.
"""

from __future__ import annotations

import time
from typing import Any

from marketo_source.sandbox.paging import TokenOrder

from sandbox_helpers import (
    ACTIVITIES,
    DELETED,
    DENSE_TYPES,
    LEAD_CHANGES,
    START,
    Api,
    StartSandbox,
    date_key,
    dense,
    error_code,
    guids,
    in_token_order,
    iso,
)

DENSE = ",".join(map(str, DENSE_TYPES))
THREE_HOURS_S = 3 * 3600


def test_full_read_returns_ground_truth_in_token_order(start_sandbox: StartSandbox, token_order: TokenOrder) -> None:
    api = Api(start_sandbox(token_order=token_order, block_size=100))
    api.sandbox.add_activities(new=30, late=60)  # late commits after newer ones: commit and date order differ
    records, _ = api.read_all(ACTIVITIES, api.paging_token(), activityTypeIds=DENSE)
    truth = dense(api.sandbox.ground_truth()["activities"])
    assert in_token_order(truth, "date") != truth
    assert records == in_token_order(truth, token_order)


def test_every_page_answers_token_and_more_result(ordered_api: Api) -> None:
    api = ordered_api
    pages = list(api.pages(ACTIVITIES, api.paging_token(), activityTypeIds=DENSE, batchSize=200))
    assert len(pages) > 2
    assert all(isinstance(p["nextPageToken"], str) and isinstance(p["moreResult"], bool) for p in pages)
    assert [p["moreResult"] for p in pages[-2:]] == [True, False]


def test_batch_size_caps_pages_and_the_page_ends_after_its_last_record(ordered_api: Api) -> None:
    api = ordered_api
    pages = list(api.pages(ACTIVITIES, api.paging_token(), activityTypeIds=DENSE, batchSize=7))
    assert all(len(p["result"]) == 7 for p in pages[:-1])
    records = [r for p in pages for r in p["result"]]
    assert len(guids(records)) == len(records)


def test_sparse_filter_gives_short_and_empty_pages_with_more_result(
    start_sandbox: StartSandbox, token_order: TokenOrder
) -> None:
    api = Api(start_sandbox(token_order=token_order, block_size=100))
    pages = list(api.pages(ACTIVITIES, api.paging_token(), activityTypeIds="37", batchSize=300))
    empty_but_more = [p for p in pages if not p["result"] and p["moreResult"]]
    assert empty_but_more, "a sparse type must produce empty pages that still say moreResult"
    assert all(len(p["result"]) < 300 for p in pages)
    deleted = [r for p in pages for r in p["result"]]
    assert deleted == [a for a in api.sandbox.ground_truth()["activities"] if a["activityTypeId"] == 37]
    assert len(pages) == -(-len(api.sandbox.ground_truth()["activities"]) // 100)


def test_since_datetime_skips_older_records(ordered_api: Api) -> None:
    api = ordered_api
    since = "2026-10-20T00:00:00Z"
    records, _ = api.read_all(ACTIVITIES, api.paging_token(since), activityTypeIds=DENSE)
    expected = [a for a in dense(api.sandbox.ground_truth()["activities"]) if a["activityDate"][:19] >= since[:19]]
    assert records == expected and records


def _read_to_the_end(api: Api, token: str) -> tuple[list[dict[str, Any]], str, tuple[str, int]]:
    """Records, final token and the final token's date mark: the key of the last activity, which the read scanned."""
    records, final = api.read_all(ACTIVITIES, token, activityTypeIds=DENSE)
    return records, final, max(map(date_key, api.sandbox.ground_truth()["activities"]))


def test_final_token_resumes_with_exactly_what_was_committed_after_its_mark(ordered_api: Api,
                                                                            token_order: TokenOrder) -> None:
    api = ordered_api
    _, final, mark = _read_to_the_end(api, api.paging_token())
    assert api.read_all(ACTIVITIES, final, activityTypeIds=DENSE)[0] == []
    for _ in range(2):  # the second round resumes from a mark of this second: some late commits lie behind it
        added = dense(api.sandbox.add_activities(new=20, late=40))
        resumed, final, next_mark = _read_to_the_end(api, final)
        # A key equal to the mark's (date, id) belongs to an activity committed after it, so it lies after it.
        after_mark = added if token_order == "commit" else [a for a in added if date_key(a) >= mark]
        assert resumed == in_token_order(after_mark, token_order) and resumed
        mark = next_mark


def test_late_commit_behind_the_final_token_is_found_only_in_commit_order(ordered_api: Api,
                                                                           token_order: TokenOrder) -> None:
    api = ordered_api
    _, final = api.read_all(ACTIVITIES, api.paging_token(), activityTypeIds=DENSE)
    api.sandbox.add_activities(new=10)
    _, final = api.read_all(ACTIVITIES, final, activityTypeIds=DENSE)  # the mark is now at the present
    late = dense(api.sandbox.add_activities(late=30, lateness_s=THREE_HOURS_S))
    new = dense(api.sandbox.add_activities(new=10))
    assert late and new
    resumed, _ = api.read_all(ACTIVITIES, final, activityTypeIds=DENSE)
    assert resumed == (late + new if token_order == "commit" else new)
    from_before, _ = api.read_all(ACTIVITIES, api.paging_token(iso(time.time() - THREE_HOURS_S - 60)),
                                  activityTypeIds=DENSE)
    assert guids(late) | guids(new) <= guids(from_before)


def test_date_token_after_late_commit_dates_excludes_them(ordered_api: Api) -> None:
    api = ordered_api
    token = api.paging_token(iso(time.time() - 3600))
    added = api.sandbox.add_activities(new=10, late=10, lateness_s=THREE_HOURS_S)
    records, _ = api.read_all(ACTIVITIES, token, activityTypeIds=DENSE)
    assert guids(dense(added[:10])) <= guids(records) and dense(added[:10])
    assert not guids(records) & guids(added[10:])


def test_date_token_serves_every_read_endpoint(ordered_api: Api) -> None:
    api = ordered_api
    token = api.paging_token()
    assert api.get(ACTIVITIES, nextPageToken=token, activityTypeIds="1")["success"]
    assert api.get(LEAD_CHANGES, nextPageToken=token, fields="city")["success"]
    assert api.get(DELETED, nextPageToken=token)["success"]


def test_garbage_and_tampered_tokens_are_refused(ordered_api: Api) -> None:
    api = ordered_api
    token = api.paging_token()
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for bad in ("garbage!", "AAAA", tampered):
        answer = api.get(ACTIVITIES, nextPageToken=bad, activityTypeIds="1")
        assert error_code(answer) == "1003"
        assert answer["errors"][0]["message"] == "Invalid value for nextPageToken"


def test_a_token_of_the_other_order_is_refused(start_sandbox: StartSandbox) -> None:
    commit_api, date_api = Api(start_sandbox()), Api(start_sandbox(token_order="date"))
    for issuer, reader in ((commit_api, date_api), (date_api, commit_api)):
        answer = reader.get(ACTIVITIES, nextPageToken=issuer.paging_token(), activityTypeIds="1")
        assert error_code(answer) == "1003"


def test_paging_token_ttl_expires_old_tokens(start_sandbox: StartSandbox, token_order: TokenOrder) -> None:
    api = Api(start_sandbox(paging_token_ttl_s=1, token_order=token_order))
    token = api.paging_token(START)
    assert api.get(ACTIVITIES, nextPageToken=token, activityTypeIds="1")["success"]
    time.sleep(2.1)  # issue times have one-second resolution
    answer = api.get(ACTIVITIES, nextPageToken=token, activityTypeIds="1")
    assert error_code(answer) == "1003"
    assert answer["errors"][0]["message"] == "nextPageToken expired"
