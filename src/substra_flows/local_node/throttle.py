"""Login throttling, as substra-backend 1.0 configures Django REST framework.

``/api-token-auth/`` is throttled to 40 requests a minute per client IP by two throttles (the
``login`` scope and ``AnonRateThrottle``), and every other anonymous call (``/info/`` without a
token) counts against the anonymous one. Each organization is its own backend, so each has its
own counters. A refused call gets 429 with ``Retry-After`` and DRF's wording.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

DEFAULT_LOGIN_RATE = 40  # per minute: substra-backend's DEFAULT_THROTTLE_RATES for "anon" and "login"


class Throttled(Exception):
    """429: ``detail`` is DRF's message, ``wait`` the Retry-After seconds."""

    def __init__(self, wait: int) -> None:
        unit = "second" if wait == 1 else "seconds"
        self.wait = wait
        self.detail = f"Request was throttled. Expected available in {wait} {unit}."
        super().__init__(self.detail)


class LoginThrottle:
    """Sliding one-minute windows per (organization, IP, scope), like DRF's ``SimpleRateThrottle``."""

    def __init__(
        self, per_minute: int = DEFAULT_LOGIN_RATE, clock: Callable[[], float] = time.monotonic, window: float = 60.0
    ) -> None:
        if per_minute < 1:
            raise ValueError(
                f"login_throttle must be >= 1 request a minute (or None to turn it off), got {per_minute!r}"
            )
        self.per_minute = per_minute
        self.duration = window  # DRF's "40/min"; tests shorten it
        self._clock = clock
        self._lock = threading.Lock()
        self._history: dict[tuple[str, str, str], deque[float]] = {}
        self.refused = 0

    def check(self, organization: str, ip: str, *, login: bool) -> None:
        """Count an anonymous call (a login counts in both scopes); Throttled if a window is full."""
        scopes = ("anon", "login") if login else ("anon",)
        with self._lock:
            moment = self._clock()
            waits = [self._wait(self._window((organization, ip, s), moment), moment) for s in scopes]
            if any(w is not None for w in waits):
                self.refused += 1
                raise Throttled(max(math.ceil(w) for w in waits if w is not None))
            for scope in scopes:
                self._history[(organization, ip, scope)].appendleft(moment)

    def _window(self, key: tuple[str, str, str], moment: float) -> deque[float]:
        history = self._history.setdefault(key, deque())
        while history and history[-1] <= moment - self.duration:
            history.pop()
        return history

    def _wait(self, history: deque[float], moment: float) -> float | None:
        """None if the call may go, else DRF's ``wait()``: time left spread over the calls left."""
        if len(history) < self.per_minute:
            return None
        remaining = self.duration - (moment - history[-1]) if history else self.duration
        available = self.per_minute - len(history) + 1
        return max(1.0, remaining / available if available > 0 else remaining)
