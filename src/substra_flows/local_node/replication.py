"""Replication lag: each organization reads its own copy of the channel, fed by orchestrator events.

On a real deployment every organization's backend serves its own database, filled from the
orchestrator's event stream, so what organization A just wrote shows on organization B only a
little later: a key just created there answers 404, a status read there is stale for a while.
The node shares one store; with ``LocalNode(replication_lag=seconds)`` it serves every other
organization a view that is ``seconds`` old:

- an asset created through organization A is invisible (404, left out of lists) on the others
  until ``lag`` has passed;
- a task's status, dates and error are served as they were ``lag`` ago, except to the worker that
  changed them; a plan's counters and status are derived from those lagged task views, and a
  cancel shows on the other organizations ``lag`` after it was made.

``lag = 0`` (the default) turns all of it off at no cost. The fault campaign's ``replication_lag``
kind turns it on for a while (:meth:`Replica.set_lag`) and counts the answers it made stale through
:data:`LAGGED_ANSWER`.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

from .store import derive_plan

_TASK_FIELDS = ("status", "start_date", "end_date", "error_type")

#: set around one request by whoever wants to know (the fault injector): a lagged answer appends to it
LAGGED_ANSWER: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("lagged_answer", default=None)


def _note_lagged(what: str) -> None:
    """The answer being built shows ``what`` older than it is (a 404, a stale status, no cancel)."""
    holder = LAGGED_ANSWER.get()
    if holder is not None:
        holder.append(what)


class Replica:
    """Remembers when, and through which organization, each record changed."""

    def __init__(self, lag: float, clock: Callable[[], float] = time.monotonic) -> None:
        if lag < 0:
            raise ValueError(f"replication_lag must be >= 0 seconds, got {lag!r}")
        self.lag = lag
        self._clock = clock
        self._lock = threading.Lock()
        self._born: dict[tuple[str, str], tuple[float, str]] = {}
        self._task_history: dict[str, list[tuple[float, str, tuple[Any, ...]]]] = {}
        self._cancels: dict[str, tuple[float, str]] = {}

    def set_lag(self, lag: float) -> None:
        """Change the lag from now on (what was recorded before keeps its dates)."""
        if lag < 0:
            raise ValueError(f"replication_lag must be >= 0 seconds, got {lag!r}")
        with self._lock:
            self.lag = lag

    @property
    def enabled(self) -> bool:
        """False when there is no lag (every method is then a no-op)."""
        return self.lag > 0

    def created(self, kind: str, key: str, writer: str) -> None:
        """An asset was created through organization ``writer``."""
        if self.enabled:
            with self._lock:
                self._born[(kind, key)] = (self._clock(), writer)

    def visible(self, kind: str, key: str, org: str) -> bool:
        """Whether organization ``org`` has received the asset yet."""
        if not self.enabled:
            return True
        with self._lock:
            born = self._born.get((kind, key))
        if born is None or born[1] == org or self._clock() - born[0] >= self.lag:
            return True
        _note_lagged(f"{kind} {key} not received")
        return False

    def observe(self, plan: dict[str, Any], tasks: list[dict[str, Any]]) -> None:
        """Record the task changes (and a cancel) a plan refresh is about to publish."""
        if not self.enabled:
            return
        moment = self._clock()
        with self._lock:
            if plan["_cancelled"] and plan["key"] not in self._cancels:
                self._cancels[plan["key"]] = (moment, plan["owner"])
            for task in tasks:
                version = tuple(task.get(f) for f in _TASK_FIELDS)
                history = self._task_history.setdefault(task["key"], [])
                if not history:
                    history.append((moment, task["owner"], version))
                elif history[-1][2] != version:
                    history.append((moment, task["worker"], version))

    def task_view(self, task: dict[str, Any], org: str) -> dict[str, Any]:
        """The task as organization ``org`` sees it now."""
        if not self.enabled or org == task["worker"]:
            return task
        moment = self._clock()
        with self._lock:
            history = list(self._task_history.get(task["key"], []))
        seen = None
        for stamp, writer, version in history:
            if writer == org or moment - stamp >= self.lag:
                seen = version
            else:
                break
        if seen is None:
            if not history:
                return task
            seen = history[0][2]
        if seen != tuple(task.get(f) for f in _TASK_FIELDS):
            _note_lagged(f"ComputeTask {task['key']} stale")
        return {**task, **dict(zip(_TASK_FIELDS, seen, strict=True))}

    def plan_view(self, plan: dict[str, Any], tasks: list[dict[str, Any]], org: str) -> dict[str, Any]:
        """The plan as organization ``org`` sees it: derived from its lagged view of the tasks."""
        if not self.enabled:
            return plan
        moment = self._clock()
        view = dict(plan)
        with self._lock:
            cancel = self._cancels.get(plan["key"])
        if cancel and cancel[1] != org and moment - cancel[0] < self.lag:
            view["_cancelled"] = None
            _note_lagged(f"ComputePlan {plan['key']} cancel not received")
        # the kind api.py records tasks under (a different name would make every task visible at once)
        derive_plan(view, [self.task_view(t, org) for t in tasks if self.visible("ComputeTask", t["key"], org)])
        return view
