"""Request budgets: token buckets by key or address, 429 with Retry-After when spent."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis

from api import rate_limits
from api.rate_limits import SharedTokenBuckets, TokenBuckets, kind_of, sent_key
from leads.settings import Settings
from leads.store import Store
from leads.store.schema import upgrade
from tests.conftest import LiveServer, RedisDatabases, _test_redis_url, free_port

# One request a second, so a drained bucket holds a request again in a second.
PER_MINUTE = 60


def new_lead() -> dict[str, str]:
    return {"email": f"{uuid.uuid4().hex}@example.com"}


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drain(request: Callable[[], httpx.Response], most: int = 3 * PER_MINUTE) -> int:
    """Sends until the first 429; how many were answered before it."""
    for answered in range(most):
        if request().status_code == 429:
            return answered
    raise AssertionError(f"no 429 after {most} requests")


def assert_rate_limited(response: httpx.Response, field: str) -> dict:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit() and int(retry_after) >= 1
    body = response.json()
    assert body["status"] == 429
    assert [(e["field"], e["reason"]) for e in body["errors"]] == [
        (field, "rate_limited")
    ]
    assert response.headers["RateLimit-Remaining"] == "0"
    return body


class TestTokenBuckets:
    def test_a_new_bucket_is_full_and_each_take_spends_one(self):
        buckets = TokenBuckets(3, clock=ManualClock())

        assert buckets.peek(("key", "a")).remaining == 3
        levels = [buckets.take(("key", "a")).remaining for _ in range(4)]

        assert levels == [2, 1, 0, 0]
        assert not buckets.peek(("key", "a")).allows
        assert buckets.peek(("key", "b")).remaining == 3

    def test_peeking_spends_nothing(self):
        buckets = TokenBuckets(2, clock=ManualClock())

        for _ in range(10):
            buckets.peek(("key", "a"))

        assert buckets.take(("key", "a")).remaining == 1

    def test_refills_at_the_per_minute_rate_and_never_past_full(self):
        clock = ManualClock()
        buckets = TokenBuckets(6, clock=clock)
        for _ in range(6):
            buckets.take(("key", "a"))

        clock.now += 10  # 6 a minute: one every 10 s
        assert buckets.peek(("key", "a")).remaining == 1
        clock.now += 3600
        assert buckets.peek(("key", "a")).remaining == 6

    def test_retry_after_is_the_whole_seconds_until_one_request_fits(self):
        clock = ManualClock()
        buckets = TokenBuckets(6, clock=clock)
        for _ in range(6):
            buckets.take(("key", "a"))

        assert buckets.peek(("key", "a")).retry_after == 10
        clock.now += 9.5
        assert buckets.peek(("key", "a")).retry_after == 1
        clock.now += 0.5
        assert buckets.peek(("key", "a")).allows

    def test_an_overdrawn_bucket_is_a_debt_waited_out(self):
        clock = ManualClock()
        buckets = TokenBuckets(60, clock=clock)
        for _ in range(63):
            buckets.take(("key", "a"))

        budget = buckets.peek(("key", "a"))
        assert budget.remaining == 0
        assert budget.retry_after == 4  # three owed, then one to spend
        assert budget.reset == 63

    def test_reset_is_the_seconds_until_full(self):
        clock = ManualClock()
        buckets = TokenBuckets(60, clock=clock)

        assert buckets.take(("key", "a")).reset == 1
        for _ in range(29):
            buckets.take(("key", "a"))
        assert buckets.peek(("key", "a")).reset == 30

    def test_takes_from_many_threads_are_each_counted_once(self):
        buckets = TokenBuckets(1_000_000, clock=ManualClock())
        start = threading.Barrier(8)

        def spend() -> None:
            start.wait()
            for _ in range(2000):
                buckets.take(("key", "shared"))

        threads = [threading.Thread(target=spend) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert buckets.peek(("key", "shared")).remaining == 1_000_000 - 16_000

    def test_a_crowded_table_forgets_full_buckets_first(self):
        clock = ManualClock()
        buckets = TokenBuckets(60, clock=clock, most=4)
        for name in "abc":
            buckets.take(("anonymous", name))
        clock.now += 60  # a, b and c are full again
        buckets.take(("anonymous", "d"))

        buckets.take(("anonymous", "e"))

        assert len(buckets) == 2
        assert buckets.peek(("anonymous", "d")).remaining == 59

    def test_a_table_crowded_with_busy_buckets_keeps_the_latest(self):
        buckets = TokenBuckets(60, clock=ManualClock(), most=4)
        for name in "abcd":
            buckets.take(("anonymous", name))

        buckets.take(("anonymous", "e"))

        assert len(buckets) <= 4
        assert buckets.peek(("anonymous", "e")).remaining == 59
        assert buckets.peek(("anonymous", "d")).remaining == 59

    def test_a_bucket_needs_room_for_a_request(self):
        with pytest.raises(ValueError, match="per_minute"):
            TokenBuckets(0)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """An emptied database of the test Redis, for this module alone."""
    databases = RedisDatabases(_test_redis_url())
    yield databases.claim()
    databases.release_all()


@pytest.fixture
def shared(redis_url) -> Callable[[int], SharedTokenBuckets]:
    """Buckets of one size in Redis, as each API process would make them."""
    prefix = f"test:{uuid.uuid4().hex}:"
    made: list[SharedTokenBuckets] = []

    def make(per_minute: int) -> SharedTokenBuckets:
        buckets = SharedTokenBuckets(per_minute, redis_url, prefix=prefix)
        made.append(buckets)
        return buckets

    make.prefix = prefix  # type: ignore[attr-defined]
    yield make
    for buckets in made:
        buckets.close()


class TestSharedTokenBuckets:
    def test_two_processes_draw_on_one_bucket(self, shared):
        first, second = shared(3), shared(3)
        who = ("key", "key-1")

        assert first.take(who).remaining == 2
        assert second.take(who).remaining == 1
        assert first.take(who).remaining == 0
        assert not second.peek(who).allows
        assert second.peek(("key", "key-2")).remaining == 3

    def test_peeking_spends_nothing(self, shared):
        buckets = shared(2)

        for _ in range(5):
            assert buckets.peek(("key", "k")).remaining == 2

    def test_refills_at_the_per_minute_rate(self, shared):
        buckets = shared(60 * 20)  # 20 a second
        who = ("key", "k")
        for _ in range(40):
            buckets.take(who)
        low = buckets.peek(who).tokens

        time.sleep(0.25)

        assert 3 <= buckets.peek(who).tokens - low <= 10

    def test_keeps_digests_not_addresses_and_lets_full_buckets_expire(
        self, shared, redis_url
    ):
        shared(60).take(("anonymous", "203.0.113.9"))

        with redis.Redis.from_url(redis_url) as client:
            [key] = client.keys(f"{shared.prefix}*")
            assert b"203.0.113.9" not in key
            assert 0 < client.pttl(key) <= 2_000

    def test_without_redis_each_process_counts_on_its_own_and_says_so(
        self, caplog, monkeypatch
    ):
        monkeypatch.setattr(rate_limits, "REDIS_RETRY_SECONDS", 3600)
        clock = ManualClock()
        buckets = SharedTokenBuckets(
            2, f"redis://127.0.0.1:{free_port()}/0", clock=clock
        )
        who = ("key", "k")

        assert [buckets.take(who).remaining for _ in range(3)] == [1, 0, 0]
        assert not buckets.peek(who).allows
        assert caplog.text.count("Redis unreachable") == 1
        buckets.close()


@contextmanager
def private_redis(port: int) -> Iterator[str]:
    """A Redis server of this test's own on `port`, keeping nothing on disk."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed: no Redis to stop and start")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis.from_url(url, socket_timeout=1) as client:
                    client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


class TestRedisComingBack:
    def test_buckets_are_shared_again_once_redis_answers(self, caplog):
        caplog.set_level(logging.INFO, logger="api.rate_limits")
        port, clock, who = free_port(), ManualClock(), ("key", "k")
        with private_redis(port) as url:
            buckets = SharedTokenBuckets(10, url, prefix="back:", clock=clock)
            assert buckets.take(who).remaining == 9
        # Redis stopped: this process counts on its own, from a full bucket.
        assert buckets.take(who).remaining == 9
        assert "Redis unreachable" in caplog.text

        with private_redis(port) as url:
            clock.now += rate_limits.REDIS_RETRY_SECONDS - 1
            # Not asked again yet: still counted here.
            assert buckets.take(who).remaining == 8
            clock.now += 1
            # A new, empty Redis: its bucket starts full and is charged there.
            assert buckets.take(who).remaining == 9
            with redis.Redis.from_url(url) as client:
                assert len(client.keys("back:*")) == 1
        assert "Redis answers again" in caplog.text
        buckets.close()


class TestWhoIsCounted:
    @pytest.mark.parametrize(
        ("method", "path", "kind"),
        [
            ("GET", "/health", None),
            ("GET", "/", None),
            ("GET", "/api/docs", None),
            ("GET", "/api/docs/assets/swagger-ui.css", None),
            ("GET", "/api/openapi.json", None),
            ("POST", "/api/leads", "key"),
            ("GET", "/api/status", "key"),
            ("GET", "/nowhere", "key"),
            ("POST", "/api/webhooks/forms", "webhook"),
            ("GET", "/api/webhooks/deliveries", "key"),
            ("POST", "/api/webhooks/deliveries/3/retry", "key"),
            ("GET", "/u/some-token", "unsubscribe"),
            ("POST", "/u/some-token", "unsubscribe"),
        ],
    )
    def test_each_path_has_its_budget(self, method, path, kind):
        assert kind_of(method, path) == kind

    def test_the_key_is_read_as_the_auth_dependency_reads_it(self):
        key = "orch_0123456789ab_" + "x" * 43

        assert sent_key([(b"authorization", f"Bearer {key}".encode())]) == key
        assert sent_key([(b"x-api-key", f" {key} ".encode())]) == key
        # Authorization wins, as in api.auth; a Basic one sends no key.
        assert sent_key([(b"authorization", b"Basic a"), (b"x-api-key", b"k")]) is None
        assert sent_key([(b"authorization", b"Bearer ")]) is None
        assert sent_key([(b"host", b"example.com")]) is None


@pytest.fixture(scope="module")
def store_url(new_store_url) -> str:
    url = new_store_url()
    store = Store(url)
    upgrade(store.engine)
    store.dispose()
    return url


@pytest.fixture
def limited(serve_api, store_url, tmp_path) -> LiveServer:
    """An API whose every bucket holds `PER_MINUTE` requests."""
    return serve_api(
        Settings(
            data_dir=tmp_path,
            database_url=store_url,
            rate_limit_per_minute=PER_MINUTE,
            prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
            crm="none",
        )
    )


@pytest.fixture
def http(limited) -> Iterator[httpx.Client]:
    """A client of the limited API sending no key."""
    with httpx.Client(base_url=limited.url, timeout=30) as client:
        yield client


class TestSharedAcrossProcesses:
    def test_a_key_spent_on_one_api_is_refused_by_another(
        self, serve_api, store_url, tmp_path, redis_url
    ):
        def api(name: str) -> LiveServer:
            return serve_api(
                Settings(
                    data_dir=tmp_path / name,
                    database_url=store_url,
                    rate_limit_per_minute=PER_MINUTE,
                    rate_limit_redis_url=redis_url,
                    prefect_api_url=f"http://127.0.0.1:{free_port()}/api",
                    crm="none",
                )
            )

        one, other = api("one"), api("other")
        with one.client(scope="read") as first:
            drain(lambda: first.get("/api/leads"))
            with httpx.Client(
                base_url=other.url, headers=first.headers, timeout=30
            ) as second:
                # The other API learns the key on its first answer (until then
                # it counts by address), which overdraws the shared bucket.
                second.get("/api/leads")
                refused = second.get("/api/leads")

        assert_rate_limited(refused, "Authorization")


class TestKeys:
    def test_a_key_past_its_budget_gets_429_and_another_key_does_not(self, limited):
        with limited.client(scope="read") as first, limited.client() as second:
            answered = drain(lambda: first.get("/api/leads"))

            assert PER_MINUTE <= answered <= PER_MINUTE + 2
            body = assert_rate_limited(first.get("/api/leads"), "Authorization")
            assert f"{PER_MINUTE:,} requests a minute" in body["detail"]
            assert second.get("/api/leads").status_code == 200
            assert second.post("/api/leads", json=new_lead()).status_code == 201

    def test_every_answer_to_a_key_says_its_budget(self, limited):
        with limited.client() as client:
            answers = [
                client.get("/api/leads"),
                client.post("/api/leads", json=new_lead()),
                client.get("/api/leads/not-a-lead"),
                client.post("/api/leads", json={"email": "broken"}),
            ]

        assert [a.status_code for a in answers] == [200, 201, 404, 422]
        assert {a.headers["RateLimit-Limit"] for a in answers} == {str(PER_MINUTE)}
        remaining = [int(a.headers["RateLimit-Remaining"]) for a in answers]
        assert remaining == sorted(remaining, reverse=True)
        assert remaining[0] - remaining[-1] >= 2
        assert all(int(a.headers["RateLimit-Reset"]) >= 1 for a in answers)

    def test_the_budget_comes_back_with_time(self, limited):
        with limited.client(scope="read") as client:
            drain(lambda: client.get("/api/leads"))
            refused = client.get("/api/leads")
            assert refused.status_code == 429

            time.sleep(int(refused.headers["Retry-After"]) + 0.2)

            assert client.get("/api/leads").status_code == 200

    def test_a_made_up_key_with_a_real_key_s_id_spends_none_of_its_budget(
        self, limited, http
    ):
        real = {"X-API-Key": limited.key(scope="read")}
        forged = {"X-API-Key": real["X-API-Key"][:-43] + "A" * 43}
        assert forged != real
        assert http.get("/api/leads", headers=real).status_code == 200

        answered = drain(lambda: http.get("/api/leads", headers=forged))

        assert answered >= PER_MINUTE
        assert_rate_limited(http.get("/api/leads", headers=forged), "Authorization")
        answer = http.get("/api/leads", headers=real)
        assert answer.status_code == 200
        assert int(answer.headers["RateLimit-Remaining"]) == PER_MINUTE - 2

    def test_guessed_keys_are_refused_with_their_address(self, limited, http):
        used = {"X-API-Key": limited.key(scope="read")}
        assert http.get("/api/leads", headers=used).status_code == 200

        def guess() -> httpx.Response:
            key = f"orch_{uuid.uuid4().hex[:12]}_{uuid.uuid4().hex * 2}"[:61]
            return http.get("/api/leads", headers={"X-API-Key": key})

        answered = drain(guess)

        assert answered >= PER_MINUTE
        # A key verified before keeps its own budget; one never seen yet is
        # checked against its address until it has been verified once.
        assert http.get("/api/leads", headers=used).status_code == 200
        new = {"X-API-Key": limited.key(scope="read")}
        assert http.get("/api/leads", headers=new).status_code == 429

    def test_requests_without_a_valid_key_share_their_address_s_budget(
        self, limited, http
    ):
        with limited.client() as keyed:
            assert keyed.get("/api/leads").status_code == 200

            answered = drain(lambda: http.get("/api/leads"))

            assert answered >= PER_MINUTE
            assert_rate_limited(http.get("/api/leads"), "Authorization")
            assert_rate_limited(http.get("/no/such/path"), "Authorization")
            assert keyed.get("/api/leads").status_code == 200

    def test_probes_and_docs_are_never_counted(self, limited, http):
        drain(lambda: http.get("/api/leads"))

        for path in ("/health", "/api/docs", "/api/openapi.json"):
            answer = http.get(path)
            assert answer.status_code == 200, path
            assert "RateLimit-Limit" not in answer.headers


class TestKeylessRoutes:
    def test_webhook_deliveries_are_counted_per_address_apart_from_keys(
        self, limited, http
    ):
        deliver = lambda: http.post("/api/webhooks/no-such-source", content=b"{}")  # noqa: E731

        answered = drain(deliver)

        assert answered >= PER_MINUTE
        assert_rate_limited(deliver(), "client")
        # Other budgets of the same address are untouched.
        assert http.get("/u/not-a-token").status_code == 404
        with limited.client() as keyed:
            assert keyed.get("/api/webhooks/deliveries").status_code == 200

    def test_unsubscribe_pages_are_counted_per_address(self, limited, http):
        answered = drain(lambda: http.get("/u/not-a-token"))

        assert answered >= PER_MINUTE
        body = assert_rate_limited(http.post("/u/not-a-token"), "client")
        assert "unsubscribe requests from this address" in body["detail"]
        assert (
            http.post("/api/webhooks/no-such-source", content=b"{}").status_code == 404
        )
