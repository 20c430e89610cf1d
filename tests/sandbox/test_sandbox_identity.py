"""Identity service and REST authentication (issue behaviours 1 and 2)."""

from __future__ import annotations

import time

import requests

from sandbox_helpers import Api, StartSandbox, error_code

TYPES = "/rest/v1/activities/types.json"


def test_identity_returns_the_same_token_until_it_expires(api: Api) -> None:
    first = api.identity("GET").json()
    second = api.identity("POST").json()
    assert first["access_token"] == second["access_token"]
    assert first["token_type"] == "bearer"
    assert 0 < second["expires_in"] <= 3600
    assert first["scope"]


def test_identity_accepts_credentials_in_a_form_body(api: Api) -> None:
    form = {"grant_type": "client_credentials", "client_id": api.sandbox.client_id,
            "client_secret": api.sandbox.client_secret}
    answer = requests.post(f"{api.base_url}/identity/oauth/token", data=form, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["access_token"] == api.token()


def test_wrong_credentials_or_grant_get_401(api: Api) -> None:
    for overrides in ({"client_secret": "wrong"}, {"client_id": "wrong"}, {"grant_type": "password"}):
        answer = api.identity(**overrides)
        assert answer.status_code == 401
        assert answer.json() == {"error": "invalid_client", "error_description": "Bad client credentials"}


def test_identity_calls_do_not_count_as_rest_calls(api: Api) -> None:
    api.token()
    stats = api.sandbox.stats()
    assert stats["calls"]["identity"] >= 2
    assert stats["rest_calls"] == 0 and stats["quota_used"] == 0


def test_token_in_query_parameter_is_refused_even_when_valid(api: Api) -> None:
    token = api.token()
    answer = requests.get(f"{api.base_url}{TYPES}", params={"access_token": token}, timeout=10).json()
    assert error_code(answer) == "601"
    assert answer["errors"][0]["message"] == "Access token invalid"
    assert api.get(TYPES)["success"] is True


def test_missing_or_unknown_token_gets_601(api: Api) -> None:
    assert error_code(requests.get(f"{api.base_url}{TYPES}", timeout=10).json()) == "601"
    unknown = requests.get(f"{api.base_url}{TYPES}", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert error_code(unknown.json()) == "601"


def test_expired_token_gets_602_and_identity_issues_a_new_one(start_sandbox: StartSandbox) -> None:
    api = Api(start_sandbox(token_ttl_s=0.4))
    old_token = api.session.headers["Authorization"]
    assert api.get(TYPES)["success"] is True
    time.sleep(0.5)
    answer = api.get(TYPES)
    assert error_code(answer) == "602"
    assert answer["errors"][0]["message"] == "Access token expired"
    assert f"Bearer {api.token()}" != old_token


def test_expire_tokens_makes_the_next_call_602(api: Api) -> None:
    api.sandbox.expire_tokens()
    assert error_code(api.get(TYPES)) == "602"
    api.session.headers["Authorization"] = f"Bearer {api.token()}"
    assert api.get(TYPES)["success"] is True
