"""Paging as Marketo does it: position tokens, block scanning, resume and late commits (behaviour 5)."""

from __future__ import annotations

import time

from sandbox_helpers import DENSE_TYPES, START, Api, error_code

ACTIVITIES = "/rest/v1/activities.json"
DENSE = ",".join(map(str, DENSE_TYPES))


def test_full_read_returns_ground_truth_in_commit_order(api: Api) -> None:
    records, _ = api.read_all(ACTIVITIES, api.paging_token(), activityTypeIds=DENSE)
    expected = [a for a in api.sandbox.ground_truth()["activities"] if a["activityTypeId"] in DENSE_TYPES]
    assert records == expected


def test_every_page_answers_token_and_more_result(api: Api) -> None:
    pages = list(api.pages(ACTIVITIES, api.paging_token(), activityTypeIds=DENSE, batchSize=200))
    assert len(pages) > 2
    assert all(isinstance(p["nextPageToken"], str) and isinstance(p["moreResult"], bool) for p in pages)
    assert [p["moreResult"] for p in pages[-2:]] == [True, False]


def test_batch_size_caps_pages_and_the_page_ends_after_its_last_record(api: Api) -> None:
    pages = list(api.pages(ACTIVITIES, api.paging_token(), activityTypeIds=DENSE, batchSize=7))
    assert all(len(p["result"]) == 7 for p in pages[:-1])
    records = [r for p in pages for r in p["result"]]
    assert len({r["marketoGUID"] for r in records}) == len(records)


def test_sparse_filter_gives_short_and_empty_pages_with_more_result(start_sandbox) -> None:
    api = Api(start_sandbox(block_size=100))
    pages = list(api.pages(ACTIVITIES, api.paging_token(), activityTypeIds="37", batchSize=300))
    empty_but_more = [p for p in pages if not p["result"] and p["moreResult"]]
    assert empty_but_more, "a sparse type must produce empty pages that still say moreResult"
    assert all(len(p["result"]) < 300 for p in pages)
    deleted = [r for p in pages for r in p["result"]]
    assert deleted == [a for a in api.sandbox.ground_truth()["activities"] if a["activityTypeId"] == 37]
    assert len(pages) == -(-len(api.sandbox.ground_truth()["activities"]) // 100)


def test_since_datetime_skips_older_records(api: Api) -> None:
    since = "2026-10-20T00:00:00Z"
    records, _ = api.read_all(ACTIVITIES, api.paging_token(since), activityTypeIds=DENSE)
    expected = [a for a in api.sandbox.ground_truth()["activities"]
                if a["activityTypeId"] in DENSE_TYPES and a["activityDate"][:19] >= since[:19]]
    assert records == expected and records


def test_final_token_resumes_with_exactly_the_added_records_including_late_commits(api: Api) -> None:
    _, final = api.read_all(ACTIVITIES, api.paging_token(), activityTypeIds=DENSE)
    again, same_final = api.read_all(ACTIVITIES, final, activityTypeIds=DENSE)
    assert again == []
    added = api.sandbox.add_activities(new=20, late=10)
    late = added[20:]
    assert all(a["activityDate"] < added[0]["activityDate"] for a in late)
    resumed, _ = api.read_all(ACTIVITIES, same_final, activityTypeIds=DENSE)
    assert resumed == [a for a in added if a["activityTypeId"] in DENSE_TYPES]
    assert any(a in resumed for a in late)


def test_date_token_after_late_commit_dates_excludes_them(api: Api) -> None:
    newest = api.sandbox.ground_truth()["activities"][-1]["activityDate"]
    token = api.paging_token(newest)
    added = api.sandbox.add_activities(new=5, late=5)
    records, _ = api.read_all(ACTIVITIES, token, activityTypeIds=DENSE)
    guids = {r["marketoGUID"] for r in records}
    assert {a["marketoGUID"] for a in added[:5] if a["activityTypeId"] in DENSE_TYPES} <= guids
    assert not guids & {a["marketoGUID"] for a in added[5:]}


def test_date_token_serves_every_read_endpoint(api: Api) -> None:
    token = api.paging_token()
    assert api.get(ACTIVITIES, nextPageToken=token, activityTypeIds="1")["success"]
    assert api.get("/rest/v1/activities/leadchanges.json", nextPageToken=token, fields="city")["success"]
    assert api.get("/rest/v1/activities/deletedleads.json", nextPageToken=token)["success"]


def test_garbage_and_tampered_tokens_are_refused(api: Api) -> None:
    token = api.paging_token()
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    for bad in ("garbage!", "AAAA", tampered):
        answer = api.get(ACTIVITIES, nextPageToken=bad, activityTypeIds="1")
        assert error_code(answer) == "1003"
        assert answer["errors"][0]["message"] == "Invalid value for nextPageToken"


def test_paging_token_ttl_expires_old_tokens(start_sandbox) -> None:
    api = Api(start_sandbox(paging_token_ttl_s=1))
    token = api.paging_token(START)
    assert api.get(ACTIVITIES, nextPageToken=token, activityTypeIds="1")["success"]
    time.sleep(2.1)  # issue times have one-second resolution
    answer = api.get(ACTIVITIES, nextPageToken=token, activityTypeIds="1")
    assert error_code(answer) == "1003"
    assert answer["errors"][0]["message"] == "nextPageToken expired"
