"""The node's HTTP edge: what a request may weigh, how long it may take, what its data may hold.

Everything here answers a client error with a 4xx and a JSON body, never a 500 or a traceback:

* :class:`NodeLimits`: every limit, with its default (``LocalNode(limits=...)``, CLI flags);
* :class:`EdgeMiddleware`: body size (413, refused from ``Content-Length`` before reading) and
  body pace (408), and a JSON 500 without traceback for what is really a node bug;
* :func:`guarded_protocol`: uvicorn's HTTP protocol with a deadline for each request head and a
  cap on open connections (the oldest idle one makes room), so slow or half-open connections
  cannot lock clients out;
* :func:`parse_json` / :func:`check_data`: depth, NUL and surrogate characters (refused as DRF
  refuses them), and the types of the fields the node uses as keys;
* :class:`RequestRejected`: the error every check raises, turned into the server's JSON body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

logger = logging.getLogger("substra_flows.local_node")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MiB = 1024 * 1024
CRASH_TEXT = "Internal error of the local node (see its log)"


@dataclass(frozen=True)
class NodeLimits:
    """Every limit of the node's HTTP edge (each also a ``substra-flows local-node`` flag)."""

    max_body_bytes: int = field(
        default=1024 * MiB,
        metadata={"help": "largest multipart body (uploads), in bytes; substra-backend's DATA_UPLOAD_MAX_SIZE"},
    )
    max_json_bytes: int = field(default=32 * MiB, metadata={"help": "largest other body (JSON, forms), in bytes"})
    max_json_depth: int = field(default=64, metadata={"help": "deepest nesting of a JSON body"})
    max_sample_bytes: int = field(
        default=1024 * MiB, metadata={"help": "largest extracted size of one uploaded data sample archive, in bytes"}
    )
    max_sample_files: int = field(
        default=10_000, metadata={"help": "most files (and folders) in one uploaded data sample archive"}
    )
    header_timeout: float = field(
        default=10.0, metadata={"help": "seconds a connection has to send a complete request head"}
    )
    body_timeout: float = field(default=300.0, metadata={"help": "seconds a request has to send its whole body"})
    body_idle_timeout: float = field(default=30.0, metadata={"help": "longest pause between two parts of a body"})
    send_timeout: float = field(
        default=60.0, metadata={"help": "seconds a client may leave a response part unread before it is dropped"}
    )
    max_connections: int = field(
        default=1000,
        metadata={"help": "open connections at most (capped below the open-files limit); the oldest idle one goes"},
    )

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"NodeLimits.{item.name} must be a positive number, got {value!r}")


class RequestRejected(Exception):
    """A request the edge refuses; answered with ``status`` and the JSON ``body``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"detail": message, **extra}


def json_error(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON error answer."""
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


# -- request data -----------------------------------------------------------------------------------

# fields whose values the node uses as dictionary keys or set members: a wrong type would crash it
_STRING_FIELDS = frozenset(
    {
        "compute_plan_key",
        "function_key",
        "asset_key",
        "parent_task_key",
        "parent_task_output_identifier",
        "identifier",
        "worker",
        "path",
    }
)
_STRING_LIST_FIELDS = frozenset({"authorized_ids", "paths"})
_STRING_OR_STRING_LIST_FIELDS = frozenset({"data_manager_keys", "data_sample_keys"})
_OBJECT_FIELDS = frozenset({"permissions", "logs_permission"})
_OBJECT_OF_OBJECTS_FIELDS = frozenset({"outputs"})


def parse_json(raw: bytes | str, limits: NodeLimits) -> Any:
    """Parse a JSON body and :func:`check_data` it (400 with DRF's "JSON parse error" text)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise RequestRejected(400, f"JSON parse error - nested deeper than {limits.max_json_depth} levels") from None
    except ValueError as error:
        raise RequestRejected(400, f"JSON parse error - {error}") from None
    check_data(data, limits)
    return data


def check_data(data: Any, limits: NodeLimits) -> None:
    """Refuse request data the node cannot store or use safely, naming the field and the value."""
    pending: list[tuple[Any, str, int]] = [(data, "", 0)]
    while pending:
        value, where, depth = pending.pop()
        if depth > limits.max_json_depth:
            raise RequestRejected(400, f"JSON parse error - nested deeper than {limits.max_json_depth} levels")
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, dict):
            for name, item in value.items():
                inner = f"{where}.{name}" if where else str(name)
                _check_text(str(name), inner)
                _check_field(str(name), item, inner)
                pending.append((item, inner, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise RequestRejected(400, f"{where or 'body'}: Null characters are not allowed.")
    for char in text:
        if "\ud800" <= char <= "\udfff":
            raise RequestRejected(400, f"{where or 'body'}: Surrogate characters are not allowed: U+{ord(char):X}.")


def _check_field(name: str, value: Any, where: str) -> None:
    def wrong(expected: str) -> RequestRejected:
        shown = json.dumps(value)[:80]
        return RequestRejected(400, f"{where}: expected {expected}, got {type(value).__name__} {shown}")

    if value is None:
        return
    if name in _STRING_FIELDS and not isinstance(value, str):
        raise wrong("a string")
    strings = isinstance(value, list) and all(isinstance(v, str) for v in value)
    if name in _STRING_LIST_FIELDS and not strings:
        raise wrong("a list of strings")
    if name in _STRING_OR_STRING_LIST_FIELDS and not (isinstance(value, str) or strings):
        raise wrong("a string or a list of strings")
    if name in _OBJECT_FIELDS and not isinstance(value, dict):
        raise wrong("an object")
    if name in _OBJECT_OF_OBJECTS_FIELDS and not (
        isinstance(value, dict) and all(v is None or isinstance(v, dict) for v in value.values())
    ):
        raise wrong("an object of objects")


# -- body size and pace -------------------------------------------------------------------------------


class EdgeMiddleware:
    """ASGI middleware bounding each request's body in size and time (see :class:`NodeLimits`)."""

    def __init__(self, app: ASGIApp, limits: NodeLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        setting = "max_body_bytes" if multipart else "max_json_bytes"
        limit: int = getattr(self.limits, setting)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await self._answer(send, _too_large(int(declared), limit, setting, announced=True))
            return
        started = time.monotonic()
        received = 0
        body_done = False
        response_started = False

        async def bounded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body, receive only reports a disconnect: no deadline then
                return await receive()
            left = self.limits.body_timeout - (time.monotonic() - started)
            wait = min(self.limits.body_idle_timeout, left)
            try:
                if wait <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), wait)
            except (TimeoutError, asyncio.TimeoutError):
                raise RequestRejected(
                    408,
                    f"Request body not received in time (body_timeout={self.limits.body_timeout:g}s, "
                    f"body_idle_timeout={self.limits.body_idle_timeout:g}s)",
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(received, limit, setting, announced=False)
                body_done = not message.get("more_body", False)
            return message

        async def bounded_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            try:
                await asyncio.wait_for(send(message), self.limits.send_timeout)
            except (TimeoutError, asyncio.TimeoutError):
                raise _ClientNotReading from None

        try:
            await self.app(scope, bounded_receive, bounded_send)
        except _ClientNotReading:
            logger.warning(
                "%s %s: the client left the answer unread for %gs (send_timeout); connection dropped",
                scope.get("method"),
                scope.get("path"),
                self.limits.send_timeout,
            )
        except RequestRejected as rejected:  # raised outside the app's own handlers
            if not response_started:
                await self._answer(send, rejected)
        except Exception:
            # a node bug, not the client's fault: the client gets a JSON 500 (from the app's
            # handler), the node's log gets the traceback, once
            logger.exception("%s %s: internal error of the local node", scope.get("method"), scope.get("path"))
            if not response_started:
                await _send_response(send, json_error(500, {"detail": CRASH_TEXT}))

    @staticmethod
    async def _answer(send: Send, rejected: RequestRejected) -> None:
        # The connection stays open: uvicorn reads and drops the rest of the body (a client still
        # sending it then reads this answer). Closing with unread data would reset the connection,
        # and the client could lose the answer. A body that never ends meets header_timeout.
        # A body that stopped arriving (408) leaves the connection in an unknown state: it is closed.
        headers = {"Connection": "close"} if rejected.status == 408 else None
        await _send_response(send, json_error(rejected.status, rejected.body, headers))


class _ClientNotReading(Exception):
    """A response part stayed unread past ``send_timeout``."""


def _too_large(size: int, limit: int, setting: str, *, announced: bool) -> RequestRejected:
    what = f"announces {size} bytes" if announced else f"is larger than {limit} bytes"
    return RequestRejected(413, f"Request body too large: it {what}; this node accepts at most {limit} ({setting})")


async def _send_response(send: Send, response: Response) -> None:
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


def harden(app: Starlette, limits: NodeLimits) -> ASGIApp:
    """``app`` answering every edge refusal, HTTP error and crash with JSON, wrapped in the edge middleware."""

    async def rejected(request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestRejected)
        return json_error(error.status, error.body)

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        text = error.detail
        if error.status_code == 405:
            text = f'Method "{request.method}" not allowed.'  # DRF's words
        return json_error(error.status_code, {"detail": text}, dict(error.headers or {}))

    async def crashed(request: Request, error: Exception) -> Response:
        return json_error(500, {"detail": CRASH_TEXT})

    app.add_exception_handler(RequestRejected, rejected)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crashed)
    return EdgeMiddleware(app, limits)


# -- slow and half-open connections -------------------------------------------------------------------


def connection_cap(limits: NodeLimits) -> int:
    """``max_connections``, kept below the process's open-files limit (files and pipes need some too)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return max(8, min(limits.max_connections, soft - 128))


def guarded_protocol(limits: NodeLimits) -> type[Any]:
    """uvicorn's HTTP protocol class, with a request-head deadline and a connection cap."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    cap = connection_cap(limits)
    head_timeout = limits.header_timeout

    class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        """A request head must be complete ``header_timeout`` seconds after the connection opened or
        after its first byte arrived, however it trickles; an idle keep-alive connection is left to
        uvicorn's own keep-alive timeout. Past the connection cap, the oldest connection without a
        request in flight is closed to make room."""

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._opened = time.monotonic()
            self._head_started = False
            self._head_deadline: asyncio.TimerHandle | None = None
            self._arm_head_deadline()
            if len(self.connections) > cap:
                self._make_room()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_head_deadline()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_flight():
                self._head_started = False
                self._cancel_head_deadline()
            elif not self.transport.is_closing():
                self._head_started = True
                if self._head_deadline is None:
                    self._arm_head_deadline()

        def _in_flight(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _arm_head_deadline(self) -> None:
            self._cancel_head_deadline()
            self._head_deadline = self.loop.call_later(head_timeout, self._head_too_slow)

        def _cancel_head_deadline(self) -> None:
            handle = getattr(self, "_head_deadline", None)
            if handle is not None:
                handle.cancel()
                self._head_deadline = None

        def _head_too_slow(self) -> None:
            self._head_deadline = None
            if self._in_flight() or self.transport.is_closing():
                return
            if self._head_started:  # a client that sent nothing gets no answer it could mistake for another's
                body = json.dumps({"detail": f"Request head not received within {head_timeout:g}s (header_timeout)"})
                self.transport.write(
                    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body.encode())
                )
            self.transport.close()

        def _make_room(self) -> None:
            idle = [
                c for c in self.connections if c is not self and not c._in_flight() and not c.transport.is_closing()
            ]
            if idle:
                oldest = min(idle, key=lambda c: c._opened)
                logger.warning("more than %d connections: closing the oldest idle one", cap)
                oldest.transport.close()
                return
            logger.warning("more than %d connections, all busy: refusing a new one", cap)
            body = json.dumps({"detail": f"Too many connections (max_connections={cap})"})
            self.transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body.encode())
            )
            self.transport.close()

    return GuardedHTTPProtocol
