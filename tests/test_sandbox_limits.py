"""Sandbox limits: leaky bucket, operating-time baskets, request cap — exact arithmetic on a manual clock."""

from __future__ import annotations

import pytest
import requests
from conftest import FAST, call, msg, register

from bulkimport.sandbox import Sandbox
from bulkimport.sandbox.limits import LeakyBucket, OperatingLedger, VirtualClock

MANUAL = 0  # time_scale=0: virtual time moves only by advance() and simulated work


def test_bucket_50_pass_51st_is_503_then_drains() -> None:
    with Sandbox(time_scale=MANUAL, cost_per_call=0, cost_per_message=0) as portal:
        with requests.Session() as s:

            def one() -> requests.Response:
                return s.post(portal.rest_url + "server.time", json={"auth": portal.access_token}, timeout=30)

            assert [one().status_code for _ in range(50)] == [200] * 50
            r = one()
            assert r.status_code == 503
            assert r.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
            assert one().status_code == 503  # refused requests do not fill the bucket further
            portal.advance(0.5)  # drains 2/s: one slot
            assert one().status_code == 200
            assert one().status_code == 503
            portal.advance(25)  # empty again
            assert [one().status_code for _ in range(50)] == [200] * 50
            assert one().status_code == 503
        assert portal.stats()["by_status"][503] == 4
        assert portal.stats()["by_error"]["QUERY_LIMIT_EXCEEDED"] == 4


def test_bucket_counts_requests_refused_for_other_reasons_too() -> None:
    with Sandbox(time_scale=MANUAL, bucket_size=3, cost_per_call=0) as portal:
        assert call(portal, "no.method").status_code == 404
        assert call(portal, "profile", token="bad").status_code == 401
        assert call(portal, "profile").status_code == 200
        assert call(portal, "profile").status_code == 503


def test_enterprise_figures() -> None:
    with Sandbox(time_scale=MANUAL, bucket_size=250, drain_rate=5, cost_per_call=0) as portal:
        codes = [call(portal, "scope").status_code for _ in range(251)]
        assert codes.count(200) == 250 and codes[-1] == 503
        portal.advance(1.0)
        assert [call(portal, "scope").status_code for _ in range(6)] == [200] * 5 + [503]


def _align(portal: Sandbox) -> None:
    portal.advance(60 - portal.now() % 60 + 1)  # one second into a fresh minute


def test_429_only_on_the_call_after_crossing_and_reset_time_honoured() -> None:
    with Sandbox(time_scale=MANUAL, cost_per_call=10, operating_limit=45) as portal:
        _align(portal)
        t0 = portal.now()
        times = []
        for _ in range(5):  # 10, 20, 30, 40 then 50: the crossing call still completes
            r = call(portal, "server.time")
            assert r.status_code == 200
            times.append(r.json()["time"])
        assert [t["operating"] for t in times] == [10, 20, 30, 40, 50]
        assert {t["operating_reset_at"] for t in times} == {int(t0 + 600)}
        r = call(portal, "server.time")
        assert r.status_code == 429
        assert r.json() == {
            "error": "OPERATION_TIME_LIMIT",
            "error_description": "Method is blocked due to operation time limit.",
        }
        # other methods are not affected
        assert call(portal, "scope").status_code == 200
        portal.advance(times[-1]["operating_reset_at"] - portal.now() - 1)
        assert call(portal, "server.time").status_code == 429
        portal.advance(1.01)
        r = call(portal, "server.time")
        assert r.status_code == 200 and r.json()["time"]["operating"] == 10


def test_baskets_expire_one_by_one() -> None:
    with Sandbox(time_scale=MANUAL, cost_per_call=10, operating_limit=45) as portal:
        _align(portal)
        for _ in range(3):  # minute 1: 30 s
            call(portal, "server.time")
        portal.advance(60)
        first_reset = None
        for _ in range(2):  # minute 2: 20 s → 50 > 45
            r = call(portal, "server.time")
            first_reset = r.json()["time"]["operating_reset_at"]
        assert call(portal, "server.time").status_code == 429
        portal.advance(first_reset - portal.now() + 0.01)  # minute 1's basket expires: 20 left
        r = call(portal, "server.time")
        assert r.status_code == 200 and r.json()["time"]["operating"] == 30
        assert r.json()["time"]["operating_reset_at"] > first_reset


def test_limits_false_disables_bucket_and_operating_limit() -> None:
    with Sandbox(
        time_scale=MANUAL, bucket_size=2, cost_per_call=30, operating_limit=50, limits=False
    ) as portal:
        codes = [call(portal, "server.time").status_code for _ in range(5)]
        assert codes == [200] * 5


def test_request_cap_cuts_off_and_keeps_what_ran() -> None:
    with Sandbox(time_scale=MANUAL, cost_per_call=0, cost_per_message=10, request_cap=60) as portal:
        register(portal)
        start = portal.now()
        r = call(
            portal,
            "imconnector.send.messages",
            CONNECTOR="hist_import",
            LINE=1,
            MESSAGES=[msg(i) for i in range(10)],
        )
        assert r.status_code == 504 and r.headers["Content-Type"].startswith("text/html")
        assert list(portal.store.messages()["message_id"]) == [f"c1-m{i}" for i in range(6)]
        assert portal.now() - start == pytest.approx(60, abs=0.01)
        r = call(portal, "imconnector.send.messages", CONNECTOR="hist_import", LINE=1, MESSAGES=[msg(20)])
        assert r.json()["time"]["operating"] == pytest.approx(70)


def test_request_cap_applies_to_a_whole_batch() -> None:
    with Sandbox(time_scale=MANUAL, cost_per_call=25, request_cap=60) as portal:
        r = call(portal, "batch", cmd={"a": "server.time", "b": "server.time", "c": "scope"})
        assert r.status_code == 504


def test_duration_is_realistic_with_a_time_scale() -> None:
    with Sandbox(time_scale=FAST) as portal:
        register(portal)
        r = call(
            portal,
            "imconnector.send.messages",
            CONNECTOR="hist_import",
            LINE=1,
            MESSAGES=[msg(i) for i in range(20)],
        )
        t = r.json()["time"]
        assert t["processing"] == pytest.approx(10.7)
        assert t["duration"] >= 10.7 and t["finish"] - t["start"] >= 10.7


def test_clock_bucket_and_ledger_units() -> None:
    clock = VirtualClock(0)
    bucket = LeakyBucket(clock, size=2, drain_rate=1)
    assert bucket.admit("a") and bucket.admit("a") and not bucket.admit("a")
    assert bucket.admit("b")  # per source IP
    clock.advance(1)
    assert bucket.level("a") == pytest.approx(1) and bucket.admit("a")
    ledger = OperatingLedger(clock, limit=5, window=600)
    ledger.charge("app", "m", clock.now(), 6)
    assert ledger.blocked("app", "m") and not ledger.blocked("app", "other") and not ledger.blocked("x", "m")
    clock.advance(600)
    assert not ledger.blocked("app", "m")
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)
