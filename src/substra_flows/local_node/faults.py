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
- ``malformed_json``: the server acts, then the JSON body arrives truncated.

Login (``/api-token-auth/``) is never hit, so a client can always log in again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

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
)


@dataclasses.dataclass(frozen=True)
class FaultConfig:
    """Which faults to inject, how often, and how slow a slow answer is."""

    rate: float = 0.2
    kinds: tuple[str, ...] = FAULT_KINDS
    slow_seconds: float = 3.0
    retry_after_seconds: int = 1
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


class _HideInjectedResets(logging.Filter):
    """Keep the server's error log for real errors: a dropped connection we injected is not one."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, ConnectionAbortedError) and str(error).startswith("injected fault"))


_HIDE_INJECTED = _HideInjectedResets()


class FaultInjector:
    """ASGI middleware that injects the configured faults and counts what it did."""

    def __init__(self, app: ASGIApp, expire_token: Callable[[str], None]) -> None:
        logging.getLogger("uvicorn.error").addFilter(_HIDE_INJECTED)
        self._app = app
        self._expire_token = expire_token
        self._lock = threading.Lock()
        self._config: FaultConfig | None = None
        self._rng = random.Random(0)
        self.requests = 0
        self.injected: Counter[str] = Counter()

    def configure(self, config: FaultConfig | None) -> None:
        """Turn injection on with ``config``, or off with None; counters restart."""
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed if config else 0)
            self.requests = 0
            self.injected = Counter()

    def stats(self) -> dict[str, Any]:
        """Requests seen and faults injected by kind since the last ``configure``."""
        with self._lock:
            return {"requests": self.requests, "injected": dict(self.injected), "total": sum(self.injected.values())}

    def _draw(self, scope: Scope) -> tuple[str | None, FaultConfig | None]:
        with self._lock:
            config = self._config
            if config is None or scope["type"] != "http" or scope["path"].endswith("/api-token-auth/"):
                return None, config
            if config.path_contains not in scope["path"] or (config.methods and scope["method"] not in config.methods):
                return None, config
            self.requests += 1
            exhausted = config.max_faults is not None and sum(self.injected.values()) >= config.max_faults
            if exhausted or self._rng.random() >= config.rate:
                return None, config
            kind = self._rng.choice(config.kinds)
            self.injected[kind] += 1
            return kind, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind, config = self._draw(scope)
        if kind is None or config is None:
            await self._app(scope, receive, send)
            return
        if kind in ("429", "502", "503", "504"):
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
            token = _token_of(scope)
            if token:
                self._expire_token(token)
            await _json_answer(send, 401, b'{"detail":"The token is expired"}', [(b"www-authenticate", b"Token")])
        else:  # faults that let the server act first
            status, headers, body = await _capture(self._app, scope, receive)
            if kind == "reset_after":
                await _broken_answer(send)
            elif kind == "slow_after":
                await asyncio.sleep(config.slow_seconds)
                await _answer(send, status, headers, body)
            else:  # malformed_json
                await _answer(send, status, headers, body[: max(1, len(body) // 2)] + b"\x00<<garbled")


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
        body = b'{"detail":"Request was throttled. Expected available in %d second."}' % retry_after
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


def _token_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "token" else None
    return None
