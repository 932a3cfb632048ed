"""Total deadlines for HTTP exchanges: connect plus every read, whatever the server's pace.

``requests`` bounds each socket operation only: a server sending one byte a second never trips a
read timeout. Here every exchange gets an absolute deadline, and one watchdog thread shuts the
exchange's socket down when it passes, which unblocks a pending read at once. A caller can also
bound a whole block of calls, retries included, with :func:`within`: waits use it to honour their
own ``timeout`` against a slow server.

The watchdog reaches the socket through urllib3 pool classes installed on the session's adapters
(:func:`install`); the pools keep urllib3's own connection classes, so tools that patch those
(vcrpy) keep working.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

logger = logging.getLogger("substra_flows")

_block_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "substra_flows_block_deadline", default=None
)
_current_watch: contextvars.ContextVar[Watch | None] = contextvars.ContextVar("substra_flows_watch", default=None)


def monotonic() -> float:
    """The clock every deadline here is measured on."""
    return time.monotonic()


@contextlib.contextmanager
def within(seconds: float | None) -> Iterator[None]:
    """Every call made inside the block (retries included) ends within ``seconds`` (None: no bound).

    Nested blocks keep the earliest deadline. The bound follows the context into
    ``asyncio.to_thread`` workers, which copy it.
    """
    if seconds is None:
        yield
        return
    until = monotonic() + max(0.0, seconds)
    outer = _block_deadline.get()
    token = _block_deadline.set(until if outer is None else min(outer, until))
    try:
        yield
    finally:
        _block_deadline.reset(token)


def block_deadline() -> float | None:
    """The deadline set by the innermost :func:`within` block (monotonic seconds), or None."""
    return _block_deadline.get()


class Watch:
    """The deadline of one exchange: when it passes, the connection in use is shut down."""

    def __init__(self, until: float, reason: str) -> None:
        self.until = until
        #: what set the deadline, for the error message ("total_timeout" or "caller")
        self.reason = reason
        self.fired = False
        self.finished = False
        self._conn: Any = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, conn: Any) -> None:
        """Remember the connection the exchange uses and its socket (shut at once if the deadline
        already passed). The socket is kept apart: http.client drops ``conn.sock`` when a response
        will close the connection, while the response goes on reading from it."""
        sock = getattr(conn, "sock", None)
        with self._lock:
            self._conn = conn
            if isinstance(sock, socket.socket):  # recorded traffic (vcrpy) has no real socket
                self._sock = sock
            if self.fired:
                _shutdown(self._sock)

    def fire(self) -> None:
        """The deadline passed: unblock the exchange by shutting its socket down."""
        with self._lock:
            if self.finished:
                return
            self.fired = True
            _shutdown(self._sock)

    def settle(self) -> bool:
        """Stop the deadline from firing from now on; return whether it already had. A reader calls
        it before committing a body, so that a body is either kept whole or reported cut, not both."""
        with self._lock:
            self.finished = True
            return self.fired

    def finish(self) -> None:
        """The exchange is over; a late deadline does nothing. A shut connection is closed for good."""
        with self._lock:
            self.finished = True
            conn, self._conn, self._sock = self._conn, None, None
        if self.fired and conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


def _shutdown(sock: socket.socket | None) -> None:
    if sock is not None:
        with contextlib.suppress(OSError):
            # the plain socket call, also for TLS sockets: SSLSocket.shutdown would drop its SSL
            # object under the reading thread's feet
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One daemon thread firing watches at their deadlines (a heap, compacted as watches finish)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._finished_in_heap = 0
        self._thread: threading.Thread | None = None

    def arm(self, watch: Watch) -> None:
        with self._cond:
            heapq.heappush(self._heap, (watch.until, next(self._order), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="substra-flows-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is watch:
                self._cond.notify()

    def disarm(self, watch: Watch) -> None:
        watch.finish()
        with self._cond:
            self._finished_in_heap += 1
            if self._finished_in_heap > 1024 and self._finished_in_heap * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
                self._finished_in_heap = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2].finished:
                    heapq.heappop(self._heap)
                    self._finished_in_heap = max(0, self._finished_in_heap - 1)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                _, _, watch = heapq.heappop(self._heap)
            watch.fire()


_WATCHDOG = _Watchdog()


def exchange_deadline(total_timeout: float | None) -> tuple[float | None, str]:
    """Absolute deadline of an exchange starting now: ``total_timeout`` or the caller's, the earlier."""
    until = None if total_timeout is None else monotonic() + total_timeout
    reason = "total_timeout"
    outer = _block_deadline.get()
    if outer is not None and (until is None or outer < until):
        until, reason = outer, "caller"
    return until, reason


@contextlib.contextmanager
def watching(until: float | None, reason: str) -> Iterator[Watch | None]:
    """Arm a watch for the exchange run inside the block (nothing when ``until`` is None)."""
    if until is None:
        yield None
        return
    watch = Watch(until, reason)
    token = _current_watch.set(watch)
    _WATCHDOG.arm(watch)
    try:
        yield watch
    finally:
        _current_watch.reset(token)
        _WATCHDOG.disarm(watch)


def settle_current() -> bool:
    """:meth:`Watch.settle` of the exchange running in this context (False outside of one)."""
    watch = _current_watch.get()
    return watch.settle() if watch is not None else False


# -- urllib3 pools that tell the current watch which connection an exchange uses ----------------


def _attach_current(conn: Any) -> None:
    watch = _current_watch.get()
    if watch is not None:
        watch.attach(conn)


def _connect_early(conn: Any) -> None:
    """Connect before sending (as urllib3 does for HTTPS), so the watch holds a socket it can shut."""
    if isinstance(conn, HTTPConnection) and conn.sock is None:
        conn.connect()


class _WatchedHTTPConnectionPool(urllib3.HTTPConnectionPool):
    def _validate_conn(self, conn: Any) -> None:
        super()._validate_conn(conn)
        _connect_early(conn)
        _attach_current(conn)  # again: a deadline that passed while connecting shuts it now

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        _attach_current(conn)
        return super()._make_request(conn, *args, **kwargs)


class _WatchedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    def _validate_conn(self, conn: Any) -> None:
        super()._validate_conn(conn)
        _attach_current(conn)

    def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
        _attach_current(conn)
        return super()._make_request(conn, *args, **kwargs)


_WATCHED_POOLS = {"http": _WatchedHTTPConnectionPool, "https": _WatchedHTTPSConnectionPool}


class DeadlineAdapter(HTTPAdapter):
    """``HTTPAdapter`` whose pools (direct and through HTTP proxies) report connections to the watch."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.ProxyManager):
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


def install(session: requests.Session, *, own: bool) -> None:
    """Make the total deadline reach the sockets of ``session``.

    Our own session gets :class:`DeadlineAdapter`; a caller's session keeps its adapters, whose
    urllib3 pool managers (when they have one) get the watched pool classes.
    """
    if own:
        session.mount("https://", DeadlineAdapter())
        session.mount("http://", DeadlineAdapter())
        return
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if isinstance(adapter, HTTPAdapter) and isinstance(manager, urllib3.PoolManager):
            manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        else:
            logger.debug("adapter %s has no urllib3 pool manager: total deadlines rely on its own timeouts", adapter)
