"""Sandbox OAuth server: refresh rotation, authorization codes, client checks, token expiry."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from conftest import FAST, call

from bulkimport.sandbox import Sandbox

FIELDS = {
    "access_token",
    "refresh_token",
    "expires",
    "expires_in",
    "client_endpoint",
    "server_endpoint",
    "domain",
    "member_id",
    "scope",
    "status",
    "user_id",
}


def refresh(portal: Sandbox, token: str, method: str = "GET", **override: Any) -> requests.Response:
    params = {
        "grant_type": "refresh_token",
        "client_id": portal.client_id,
        "client_secret": portal.client_secret,
        "refresh_token": token,
        **override,
    }
    if method == "GET":
        return requests.get(portal.oauth_url, params=params, timeout=30)
    return requests.post(portal.oauth_url, data=params, timeout=30)


def test_refresh_returns_the_full_field_set(sandbox: Sandbox) -> None:
    r = refresh(sandbox, sandbox.refresh_token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == FIELDS
    assert body["client_endpoint"] == sandbox.rest_url
    assert body["member_id"] == sandbox.member_id and body["domain"] == sandbox.domain
    assert body["expires_in"] == 3600 and abs(body["expires"] - (sandbox.now() + 3600)) < 5 * FAST / 1000 + 5
    assert set(body["scope"].split(",")) == {"imopenlines", "imconnector", "im", "disk"}
    assert body["access_token"] != sandbox.access_token and body["refresh_token"] != sandbox.refresh_token
    assert call(sandbox, "profile", token=body["access_token"]).status_code == 200


def test_refresh_rotates_the_old_refresh_token_is_invalid_grant(sandbox: Sandbox) -> None:
    first = refresh(sandbox, sandbox.refresh_token, method="POST")
    assert first.status_code == 200
    again = refresh(sandbox, sandbox.refresh_token)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    new = refresh(sandbox, first.json()["refresh_token"])
    assert new.status_code == 200


def test_wrong_client_secret_or_id_is_invalid_client(sandbox: Sandbox) -> None:
    r = refresh(sandbox, sandbox.refresh_token, client_secret="wrong")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = refresh(sandbox, sandbox.refresh_token, client_id="local.other.1")
    assert r.json()["error"] == "invalid_client"
    # a refused attempt did not burn the refresh token
    assert refresh(sandbox, sandbox.refresh_token).status_code == 200


def test_unknown_refresh_token_and_missing_grant(sandbox: Sandbox) -> None:
    assert refresh(sandbox, "nope").json()["error"] == "invalid_grant"
    r = requests.get(sandbox.oauth_url, params={"client_id": sandbox.client_id}, timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_access_token_expires_after_its_lifetime_in_virtual_time(sandbox: Sandbox) -> None:
    assert call(sandbox, "profile").status_code == 200
    sandbox.advance(3601)
    r = call(sandbox, "profile")
    assert r.status_code == 401
    assert r.json() == {
        "error": "expired_token",
        "error_description": "The access token provided has expired",
    }
    fresh = refresh(sandbox, sandbox.refresh_token).json()
    assert call(sandbox, "profile", token=fresh["access_token"]).status_code == 200


def test_short_token_lifetime() -> None:
    with Sandbox(time_scale=FAST, token_lifetime=60) as portal:
        r = refresh(portal, portal.refresh_token)
        assert r.json()["expires_in"] == 60
        portal.advance(61)
        assert call(portal, "profile").json()["error"] == "expired_token"


def test_expire_tokens_forces_expiry_of_every_token(sandbox: Sandbox) -> None:
    other = refresh(sandbox, sandbox.refresh_token).json()["access_token"]
    sandbox.expire_tokens()
    assert call(sandbox, "profile").status_code == 401
    assert call(sandbox, "profile", token=other).json()["error"] == "expired_token"


def test_authorization_code_grant(sandbox: Sandbox) -> None:
    code = sandbox.issue_code()
    params = {
        "grant_type": "authorization_code",
        "client_id": sandbox.client_id,
        "client_secret": sandbox.client_secret,
        "code": code,
    }
    r = requests.get(sandbox.oauth_url, params=params, timeout=30)
    assert r.status_code == 200 and set(r.json()) == FIELDS
    again = requests.get(sandbox.oauth_url, params=params, timeout=30)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_authorization_code_is_valid_30_virtual_seconds(sandbox: Sandbox) -> None:
    code = sandbox.issue_code()
    sandbox.advance(31)
    r = requests.post(
        sandbox.oauth_url,
        data={
            "grant_type": "authorization_code",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "code": code,
        },
        timeout=30,
    )
    assert r.json()["error"] == "invalid_grant"


def test_authorize_page_shows_a_code_that_can_be_exchanged(sandbox: Sandbox) -> None:
    r = requests.get(
        sandbox.url + "/oauth/authorize/", params={"client_id": sandbox.client_id, "state": "xyz"}, timeout=30
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    code = r.text.split('<code id="code">', 1)[1].split("</code>", 1)[0]
    assert "state=xyz" in r.text
    token = requests.get(
        sandbox.oauth_url,
        params={
            "grant_type": "authorization_code",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "code": code,
        },
        timeout=30,
    )
    assert token.status_code == 200


def test_authorize_redirects_when_the_app_has_a_redirect_uri() -> None:
    with Sandbox(time_scale=FAST, redirect_uri="http://127.0.0.1:9/app/") as portal:
        r = requests.get(
            portal.url + "/oauth/authorize/",
            params={"client_id": portal.client_id, "state": "s1"},
            allow_redirects=False,
            timeout=30,
        )
        assert r.status_code == 302
        query = parse_qs(urlsplit(r.headers["Location"]).query)
        assert query["state"] == ["s1"] and query["member_id"] == [portal.member_id] and query["code"]
        bad = requests.get(portal.url + "/oauth/authorize/", params={"client_id": "x"}, timeout=30)
        assert bad.status_code == 400


def test_old_access_token_keeps_working_until_it_expires(sandbox: Sandbox) -> None:
    refresh(sandbox, sandbox.refresh_token)
    assert call(sandbox, "profile").status_code == 200


def test_oauth_endpoint_does_not_count_in_the_bucket() -> None:
    with Sandbox(time_scale=FAST, bucket_size=2, drain_rate=0.001) as portal:
        token = portal.refresh_token
        for _ in range(4):
            token = refresh(portal, token).json()["refresh_token"]
        assert call(portal, "profile").status_code == 200


def test_refresh_token_lives_180_days(sandbox: Sandbox) -> None:
    sandbox.advance(180 * 86400 - 60)
    r = refresh(sandbox, sandbox.refresh_token)
    assert r.status_code == 200
    sandbox.advance(180 * 86400 + 1)
    assert refresh(sandbox, r.json()["refresh_token"]).json()["error"] == "invalid_grant"


def test_token_endpoint_accepts_a_json_body(sandbox: Sandbox) -> None:
    r = requests.post(
        sandbox.oauth_url,
        json={
            "grant_type": "refresh_token",
            "client_id": sandbox.client_id,
            "client_secret": sandbox.client_secret,
            "refresh_token": sandbox.refresh_token,
        },
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["access_token"]
