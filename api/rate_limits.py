"""Request budgets: a token bucket per API key, and per address where no key is due.

Who is counted where:

- a request carrying a valid key, against that key's bucket (the key the
  `request_context` dependency verified, so a made-up key that borrows a real
  key's id part never spends that key's budget);
- a request to a keyed route without a valid key (401, or a 404 no route
  matched), against its client address's bucket;
- webhook receipt (`POST /api/webhooks/{source}`) and the unsubscribe pages
  (`/u/…`), which take no key, against the client address's bucket of each:
  a flood from one address cannot starve the senders at other addresses, and
  a sender that honours `Retry-After` loses nothing;
- `/`, `/health`, the API docs and `/api/openapi.json`: not at all (probes
  and static pages).

Each bucket holds `ORCH_RATE_LIMIT_PER_MINUTE` tokens and regains them at that
rate per minute. A request is refused with 429 only when its bucket is already
empty, and charged when its answer starts; concurrent requests can therefore
overdraw a bucket by at most the number in flight, a debt the next requests
wait out. Every counted answer carries `RateLimit-Limit`, `RateLimit-Remaining`
and `RateLimit-Reset` (the fields of draft-ietf-httpapi-ratelimit-headers up to
its sixth draft, which most clients read): the bucket's size, the whole tokens
left, and the seconds until it is full again.

Each API process keeps its own buckets unless `ORCH_RATE_LIMIT_REDIS_URL`
names a Redis: then every process (`ORCH_API_WORKERS`, replicas on other
machines) draws on the same buckets there (`SharedTokenBuckets`), timed by
Redis's clock. Without one, N processes allow up to N times the budget.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple, Protocol

import anyio
import redis
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem
from leads.errors import FieldError

logger = logging.getLogger(__name__)

Kind = Literal["key", "anonymous", "webhook", "unsubscribe"]
Identity = tuple[Kind, str]

LIMIT_HEADER = "RateLimit-Limit"
REMAINING_HEADER = "RateLimit-Remaining"
RESET_HEADER = "RateLimit-Reset"
RATE_LIMIT_HEADERS = (LIMIT_HEADER, REMAINING_HEADER, RESET_HEADER)

_EXEMPT = frozenset({"/", "/health", "/api/docs", "/api/openapi.json"})
_EXEMPT_PREFIX = "/api/docs/"
_WEBHOOKS = "/api/webhooks/"
_UNSUBSCRIBE = "/u/"
# A bucket table past this many entries is pruned: full buckets first (they
# hold nothing a new one would not), then the least recently charged.
MOST_BUCKETS = 100_000
# Verified keys remembered by digest; past this many, all are forgotten.
MOST_KEYS = 10_000


class Budget(NamedTuple):
    """One bucket's level at a moment, and what it means for the caller."""

    limit: int
    tokens: float
    per_second: float

    @property
    def allows(self) -> bool:
        """Whether a request may start now."""
        return self.tokens >= 1

    @property
    def remaining(self) -> int:
        """Whole requests left before the bucket is empty."""
        return max(0, math.floor(self.tokens))

    @property
    def retry_after(self) -> int:
        """Whole seconds, at least 1, until the bucket holds a request again."""
        return max(1, math.ceil((1 - self.tokens) / self.per_second))

    @property
    def reset(self) -> int:
        """Whole seconds until the bucket is full again."""
        return max(0, math.ceil((self.limit - self.tokens) / self.per_second))

    def headers(self) -> dict[str, str]:
        return {
            LIMIT_HEADER: str(self.limit),
            REMAINING_HEADER: str(self.remaining),
            RESET_HEADER: str(self.reset),
        }

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers` as ASGI sends them."""
        return [
            (b"ratelimit-limit", b"%d" % self.limit),
            (b"ratelimit-remaining", b"%d" % self.remaining),
            (b"ratelimit-reset", b"%d" % self.reset),
        ]


class TokenBuckets:
    """Token buckets by identity, all of one size, safe to share between threads.

    A bucket not seen yet is full. `peek` never changes a bucket; `take`
    removes one token and may leave a bucket below zero.
    """

    blocking = False

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        most: int = MOST_BUCKETS,
    ) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute: expected 1 or more, got {per_minute}")
        self.limit = per_minute
        self.per_second = per_minute / 60
        self._clock = clock
        self._most = most
        # identity -> (tokens, when); kept in order of the last charge.
        self._levels: dict[Identity, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def peek(self, identity: Identity) -> Budget:
        """The bucket's level now."""
        with self._lock:
            tokens = self._level(identity, self._clock())
        return self._budget(tokens)

    def take(self, identity: Identity) -> Budget:
        """Charges one request to the bucket; its level after."""
        with self._lock:
            now = self._clock()
            tokens = self._level(identity, now) - 1
            if self._levels.pop(identity, None) is None and (
                len(self._levels) >= self._most
            ):
                self._prune(now)
            self._levels[identity] = (tokens, now)
        return self._budget(tokens)

    def __len__(self) -> int:
        return len(self._levels)

    def close(self) -> None:
        """Nothing to let go of: the buckets live in this process."""

    def _level(self, identity: Identity, now: float) -> float:
        held = self._levels.get(identity)
        if held is None:
            return float(self.limit)
        tokens, when = held
        return min(float(self.limit), tokens + (now - when) * self.per_second)

    def _prune(self, now: float) -> None:
        full = [
            identity
            for identity in self._levels
            if self._level(identity, now) >= self.limit
        ]
        for identity in full:
            del self._levels[identity]
        # Still crowded (that many callers within a minute): the least recently
        # charged start over with a full bucket.
        excess = len(self._levels) - self._most * 3 // 4
        for identity in list(self._levels)[: max(0, excess)]:
            del self._levels[identity]

    def _budget(self, tokens: float) -> Budget:
        return Budget(limit=self.limit, tokens=tokens, per_second=self.per_second)


class Buckets(Protocol):
    """Where the middleware reads and charges budgets."""

    limit: int
    # Whether `peek` and `take` wait on another process (a network round
    # trip): the middleware then calls them off the event loop.
    blocking: bool

    def peek(self, identity: Identity) -> Budget: ...

    def take(self, identity: Identity) -> Budget: ...

    def close(self) -> None: ...


# One bucket's level and when it was last charged, in a hash that expires once
# the bucket would be full again. Redis's clock times every process alike.
_LEVEL_SCRIPT = """
local limit = tonumber(ARGV[1])
local per_second = tonumber(ARGV[2])
local charge = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local held = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = limit
if held[1] then
  tokens = math.min(limit, tonumber(held[1]) + (now - tonumber(held[2])) * per_second)
end
if charge > 0 then
  tokens = tokens - charge
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
  local full_in = math.ceil((limit - tokens) / per_second * 1000) + 1000
  redis.call('PEXPIRE', KEYS[1], full_in)
end
return tostring(tokens)
"""
# A Redis that answers slower than this is treated as down: a request must
# not wait on its budget longer than on its own work.
REDIS_TIMEOUT_SECONDS = 0.25
# How often a Redis found down is tried again.
REDIS_RETRY_SECONDS = 5.0


class SharedTokenBuckets:
    """`TokenBuckets` kept in Redis, shared by every API process that names it.

    Identities are stored as digests (a client address is personal data).
    While Redis cannot be reached, each process falls back to buckets of its
    own, as without a Redis, and says so in its log; it tries Redis again
    after `REDIS_RETRY_SECONDS`.
    """

    blocking = True

    def __init__(
        self,
        per_minute: int,
        url: str,
        *,
        prefix: str = "orchestrator:rate:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = per_minute
        self.per_second = per_minute / 60
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._level = self._redis.register_script(_LEVEL_SCRIPT)
        self._prefix = prefix
        self._local = TokenBuckets(per_minute, clock=clock)
        self._clock = clock
        self._down_since: float | None = None

    def peek(self, identity: Identity) -> Budget:
        """The bucket's level now."""
        return self._charged(identity, 0) or self._local.peek(identity)

    def take(self, identity: Identity) -> Budget:
        """Charges one request to the bucket; its level after."""
        return self._charged(identity, 1) or self._local.take(identity)

    def close(self) -> None:
        self._redis.close()

    def _charged(self, identity: Identity, charge: int) -> Budget | None:
        now = self._clock()
        if (
            self._down_since is not None
            and now - self._down_since < REDIS_RETRY_SECONDS
        ):
            return None
        kind, value = identity
        digest = hashlib.sha256(f"{kind}\0{value}".encode()).hexdigest()[:32]
        try:
            tokens = float(
                self._level(
                    keys=[f"{self._prefix}{digest}"],
                    args=[self.limit, self.per_second, charge],
                )
            )
        except redis.RedisError as exc:
            if self._down_since is None:
                logger.warning(
                    "rate limits: Redis unreachable (%s); each API process "
                    "counts on its own until it answers",
                    exc.__class__.__name__,
                )
            self._down_since = now
            return None
        if self._down_since is not None:
            logger.info("rate limits: Redis answers again; buckets shared")
            self._down_since = None
        return Budget(limit=self.limit, tokens=tokens, per_second=self.per_second)


def rate_buckets(per_minute: int, redis_url: str | None) -> Buckets:
    """The buckets the settings ask for: shared in Redis, or this process's own."""
    if redis_url:
        return SharedTokenBuckets(per_minute, redis_url)
    return TokenBuckets(per_minute)


def kind_of(method: str, path: str) -> Kind | None:
    """Which budget a request to `path` is counted against; None for none."""
    if path in _EXEMPT or path.startswith(_EXEMPT_PREFIX):
        return None
    if path.startswith(_UNSUBSCRIBE):
        return "unsubscribe"
    if (
        method == "POST"
        and path.startswith(_WEBHOOKS)
        and "/" not in path[len(_WEBHOOKS) :]
    ):
        return "webhook"
    return "key"


def sent_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key a request sends, read as `api.auth` reads it; None for none."""
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1")
    if authorization:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
    else:
        secret = api_key or ""
    return secret.strip() or None


class RateLimit:
    """Refuses a request whose bucket is empty with 429, before any handler runs.

    The charge goes to the key `request_context` verified, which it reads from
    the request's state when the answer starts; so this runs around the
    router, never inside a route. The check before a request can only go by
    what it sends: a sent key is checked against its key's bucket once that
    very key (by its digest) has been verified, and until then, like a
    request without a key, against its address's bucket. Guessed keys, and
    made-up keys borrowing a real key's id, are thus refused with the address.
    """

    def __init__(self, app: ASGIApp, buckets: Buckets) -> None:
        self.app = app
        self.buckets = buckets
        # Digest of a sent key -> id of the key it proved to be.
        self._verified: dict[bytes, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        kind = kind_of(scope["method"], scope["path"])
        if kind is None:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else "unknown"
        first: Identity = (kind, address)
        digest = None
        if kind == "key":
            secret = sent_key(scope["headers"])
            digest = hashlib.sha256(secret.encode()).digest() if secret else None
            known = self._verified.get(digest) if digest else None
            first = ("key", known) if known else ("anonymous", address)
        budget = await self._call(self.buckets.peek, first)
        if not budget.allows:
            await _refused(first, budget)(scope, receive, send)
            return
        # Shared with the Request objects below, which record the verified key.
        state = scope.setdefault("state", {})

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                identity = first
                if kind == "key":
                    identity = self._verdict(digest, state.get("key_id"), address)
                spent = await self._call(self.buckets.take, identity)
                message["headers"] = [
                    *message.get("headers", ()),
                    *spent.raw_headers(),
                ]
            await send(message)

        await self.app(scope, receive, counted)

    async def _call(
        self, method: Callable[[Identity], Budget], identity: Identity
    ) -> Budget:
        # A shared bucket is a round trip to Redis: a slow one must hold up
        # this request only, not every request the event loop serves.
        if self.buckets.blocking:
            return await anyio.to_thread.run_sync(method, identity)
        return method(identity)

    def _verdict(
        self, digest: bytes | None, key_id: str | None, address: str
    ) -> Identity:
        """The bucket a keyed route's answer is charged to; learns verified keys."""
        if key_id is None:
            if digest is not None:
                # Revoked, or refused its scope: checked by address again.
                self._verified.pop(digest, None)
            return ("anonymous", address)
        if digest is not None and digest not in self._verified:
            if len(self._verified) >= MOST_KEYS:
                self._verified.clear()
            self._verified[digest] = key_id
        return ("key", key_id)


_WHO = {
    "key": ("Authorization", "this API key"),
    "anonymous": (
        "Authorization",
        "requests without a valid API key from this address",
    ),
    "webhook": ("client", "webhook deliveries from this address"),
    "unsubscribe": ("client", "unsubscribe requests from this address"),
}


def _refused(identity: Identity, budget: Budget) -> JSONResponse:
    field, who = _WHO[identity[0]]
    wait = budget.retry_after
    message = (
        f"{who} may make {budget.limit:,} requests a minute; try again in {wait} s"
    )
    return problem(
        429,
        message,
        slug="rate-limited",
        errors=[FieldError(field, "rate_limited", message)],
        headers={"Retry-After": str(wait), **budget.headers()},
    )
