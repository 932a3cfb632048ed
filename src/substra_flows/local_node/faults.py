"""Fault injection for the local node: the failures a nightly pipeline meets, on demand.

An ASGI middleware in front of the node's API. Off by default; turned on with
``LocalNode(faults=FaultConfig(...))``, ``node.set_faults(...)`` or the CLI's ``--fault-rate`` and
``--fault-kinds``. Each eligible request is hit with probability ``rate`` by one of ``kinds``
(seeded, so a campaign is reproducible):

- ``429``: throttled before acting, with ``Retry-After``;
- ``502`` / ``503`` / ``504``: a gateway error before acting (502 with an HTML body, as a proxy);
- ``reset_before`` / ``reset_after``: the connection drops mid-response, before the server acted or
  after it did (the client cannot tell which: that is the point);
- ``slow_before`` / ``slow_after``: the answer comes ``slow_seconds`` late, before or after acting
  (longer than a client's read timeout makes the outcome unknown to the client);
- ``expire_token``: the caller's token expires now and the request gets 401 ``The token is expired``;
- ``malformed_json``: the server acts, then the JSON body arrives truncated;
- ``login_throttle``: substra-backend's login throttle (40 a minute per IP, throttle.py) refusing a
  login: 429 with ``Retry-After`` and DRF's wording ("Request was throttled. Expected available in
  N second(s)."), and every login of that organization in the next ``retry_after_seconds`` refused
  alike, as the throttle's window is still full. A real throttle bites when many logins come at
  once, so a hit on another request expires the caller's token (401 ``The token is expired``, as
  ``expire_token``) and that organization's next login is the one refused: the client must log in
  again, wait out Retry-After, and repeat its request;
- ``replication_lag``: not drawn per request, since a real deployment lags on every read: while it is
  configured the node's own replication model (replication.py) runs with a lag of
  ``replication_lag_seconds``, so a read on organization B of what A just created is 404 and
  statuses there are stale for that long. Each answer it made stale or 404 counts as one fault. A
  random 404 per request would be less faithful: it could hide an asset again after showing it,
  which no real deployment does (an organization's database only ever catches up).

Login (``/api-token-auth/``) is hit by ``login_throttle`` only, so a client can always log in again
within a Retry-After.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .replication import LAGGED_ANSWER
from .throttle import Throttled

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FAULT_KINDS = (
    "429",
    "502",
    "503",
    "504",
    "reset_before",
    "reset_after",
    "slow_before",
    "slow_after",
    "expire_token",
    "malformed_json",
    "login_throttle",
    "replication_lag",
)
#: kinds the injector draws request by request (``replication_lag`` is a state of the node instead)
DRAWN_KINDS = tuple(k for k in FAULT_KINDS if k != "replication_lag")
_LOGIN_PATH = "/api-token-auth/"


@dataclasses.dataclass(frozen=True)
class FaultConfig:
    """Which faults to inject, how often, and how slow a slow answer is."""

    rate: float = 0.2
    kinds: tuple[str, ...] = FAULT_KINDS
    slow_seconds: float = 3.0
    retry_after_seconds: int = 1
    replication_lag_seconds: float = 1.5  # the ``replication_lag`` kind's lag between organizations
    seed: int = 0
    max_faults: int | None = None  # stop injecting after this many (rate=1, max_faults=1: exactly the next request)
    path_contains: str = ""  # only requests whose path contains this (e.g. "/compute_plan/")
    methods: tuple[str, ...] = ()  # only these methods (empty: all)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"FaultConfig.rate must be between 0 and 1, got {self.rate!r}")
        unknown = [k for k in self.kinds if k not in FAULT_KINDS]
        if unknown or not self.kinds:
            raise ValueError(f"FaultConfig.kinds: unknown or empty {list(self.kinds)!r}; choose from {FAULT_KINDS}")
        if self.slow_seconds < 0:
            raise ValueError(f"FaultConfig.slow_seconds must be >= 0, got {self.slow_seconds!r}")
        if self.retry_after_seconds < 1:
            raise ValueError(f"FaultConfig.retry_after_seconds must be >= 1, got {self.retry_after_seconds!r}")
        if self.replication_lag_seconds <= 0:
            raise ValueError(f"FaultConfig.replication_lag_seconds must be > 0, got {self.replication_lag_seconds!r}")


class _HideInjectedResets(logging.Filter):
    """Keep the server's error log for real errors: a dropped connection we injected is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, ConnectionAbortedError) and str(error).startswith("injected fault"))


_HIDE_INJECTED = _HideInjectedResets()


class FaultInjector:
    """ASGI middleware that injects the configured faults and counts what it did."""

    def __init__(
        self,
        app: ASGIApp,
        expire_token: Callable[[str], None],
        replication_lag: Callable[[float | None], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``replication_lag(seconds)`` turns the node's replication lag on, ``(None)`` back to the
        node's own setting."""
        logging.getLogger("uvicorn.error").addFilter(_HIDE_INJECTED)
        self._app = app
        self._expire_token = expire_token
        self._replication_lag = replication_lag
        self._clock = clock
        self._lock = threading.Lock()
        self._config: FaultConfig | None = None
        self._rng = random.Random(0)
        self._login_due: set[str] = set()  # organizations whose next login is refused
        self._login_closed: dict[str, float] = {}  # organization -> end of its refused-login window
        self.requests = 0
        self.injected: Counter[str] = Counter()

    def configure(self, config: FaultConfig | None) -> None:
        """Turn injection on with ``config``, or off with None; counters restart."""
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed if config else 0)
            self._login_due.clear()
            self._login_closed.clear()
            self.requests = 0
            self.injected = Counter()
        lagging = config is not None and "replication_lag" in config.kinds
        self._replication_lag(config.replication_lag_seconds if config is not None and lagging else None)

    def stats(self) -> dict[str, Any]:
        """Requests seen and faults injected by kind since the last ``configure``."""
        with self._lock:
            return {"requests": self.requests, "injected": dict(self.injected), "total": sum(self.injected.values())}

    def _draw(self, scope: Scope) -> tuple[str | None, FaultConfig | None]:
        with self._lock:
            config = self._config
            if config is None or scope["type"] != "http":
                return None, config
            path = scope["path"]
            login = path.endswith(_LOGIN_PATH)
            organization = _organization_of(path)
            if login and "login_throttle" in config.kinds:
                refused = self._refused_login(organization, config)
                if refused:
                    return refused, config
            if config.path_contains not in path or (config.methods and scope["method"] not in config.methods):
                return None, config
            self.requests += 1
            kinds = ("login_throttle",) if login else DRAWN_KINDS
            candidates = [k for k in config.kinds if k in kinds]
            exhausted = config.max_faults is not None and sum(self.injected.values()) >= config.max_faults
            if not candidates or exhausted or self._rng.random() >= config.rate:
                return None, config
            kind = self._rng.choice(candidates)
            self.injected[kind] += 1
            if kind == "login_throttle":
                if login:
                    self._login_closed[organization] = self._clock() + config.retry_after_seconds
                else:
                    self._login_due.add(organization)
            return kind, config

    def _refused_login(self, organization: str, config: FaultConfig) -> str | None:
        """``login_throttle`` when this login must be refused whatever the draw (under the lock)."""
        moment = self._clock()
        if organization in self._login_due:  # the login a forced expiry called for
            self._login_due.discard(organization)
            self._login_closed[organization] = moment + config.retry_after_seconds
            return "login_throttle"
        if moment < self._login_closed.get(organization, 0.0):  # sent again before Retry-After passed
            self.injected["login_throttle"] += 1
            return "login_throttle"
        return None

    def _retry_after(self, organization: str, config: FaultConfig) -> int:
        """Whole seconds until this organization's login window opens again (DRF rounds up)."""
        with self._lock:
            left = self._login_closed.get(organization, 0.0) - self._clock()
        return max(1, min(config.retry_after_seconds, math.ceil(left)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind, config = self._draw(scope)
        if kind is None or config is None:
            await self._serve(scope, receive, send, config)
            return
        if kind == "login_throttle":
            await _drain(receive)
            if scope["path"].endswith(_LOGIN_PATH):
                wait = self._retry_after(_organization_of(scope["path"]), config)
                body = b'{"detail":"%s"}' % Throttled(wait).detail.encode()
                await _json_answer(send, 429, body, [(b"retry-after", b"%d" % wait)])
            else:
                await self._expired(scope, send)
        elif kind in ("429", "502", "503", "504"):
            await _drain(receive)
            await _gateway_answer(send, kind, config.retry_after_seconds)
        elif kind == "reset_before":
            await _drain(receive)
            await _broken_answer(send)
        elif kind == "slow_before":
            await asyncio.sleep(config.slow_seconds)
            await self._app(scope, receive, send)
        elif kind == "expire_token":
            await _drain(receive)
            await self._expired(scope, send)
        else:  # faults that let the server act first
            status, headers, body = await _capture(self._app, scope, receive)
            if kind == "reset_after":
                await _broken_answer(send)
            elif kind == "slow_after":
                await asyncio.sleep(config.slow_seconds)
                await _answer(send, status, headers, body)
            else:  # malformed_json
                await _answer(send, status, headers, body[: max(1, len(body) // 2)] + b"\x00<<garbled")

    async def _serve(self, scope: Scope, receive: Receive, send: Send, config: FaultConfig | None) -> None:
        """Let the node answer; under ``replication_lag``, count the answer if the lag made it stale."""
        if config is None or "replication_lag" not in config.kinds or scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        lagged: list[str] = []

        async def counted(message: Message) -> None:
            # counted before the answer leaves: a client that reads the stats next must see it
            if message["type"] == "http.response.start" and lagged:
                with self._lock:
                    if self._config is config:
                        self.injected["replication_lag"] += 1
            await send(message)

        marker = LAGGED_ANSWER.set(lagged)
        try:
            await self._app(scope, receive, counted)
        finally:
            LAGGED_ANSWER.reset(marker)

    async def _expired(self, scope: Scope, send: Send) -> None:
        """Expire the caller's token now and answer as the node does to an expired token."""
        token = _token_of(scope)
        if token:
            self._expire_token(token)
        await _json_answer(send, 401, b'{"detail":"The token is expired"}', [(b"www-authenticate", b"Token")])


async def _drain(receive: Receive) -> None:
    """Read the request body so that the client's send completes before the answer."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run the app to completion and keep its answer instead of sending it."""
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    return status, headers, b"".join(chunks)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    await send(
        {"type": "http.response.start", "status": status, "headers": [*kept, (b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


async def _json_answer(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _answer(send, status, [(b"content-type", b"application/json"), *(extra or [])], body)


async def _gateway_answer(send: Send, kind: str, retry_after: int) -> None:
    if kind == "429":
        body = b'{"detail":"%s"}' % Throttled(retry_after).detail.encode()
        await _json_answer(send, 429, body, [(b"retry-after", b"%d" % retry_after)])
    elif kind == "502":
        await _answer(send, 502, [(b"content-type", b"text/html")], b"<html><body>502 Bad Gateway</body></html>")
    else:
        await _json_answer(send, int(kind), b'{"detail":"injected fault: upstream unavailable"}')


async def _broken_answer(send: Send) -> None:
    """Promise a body and stop half-way: the server closes the connection, the client sees it drop."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"4096")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"partial":', "more_body": True})
    raise ConnectionAbortedError("injected fault: connection dropped mid-response")


def _organization_of(path: str) -> str:
    """The organization a path is for: its first segment (``/org-1/...`` -> ``org-1``)."""
    return path.lstrip("/").split("/", 1)[0]


def _token_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "token" else None
    return None
