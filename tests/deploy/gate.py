"""A gate in front of the local node's task execution, so a plan is still running when a test acts.

A real plan runs for minutes; the example plan on the local node runs for seconds. To restart a
triggerer or cancel a run *during* the wait, without racing the plan, the test closes the gate:
the node accepts the plan and marks its first task executing, but runs nothing until the gate
opens. Tasks are executed for real (the official SDK's subprocess backend) once it is open.
"""

from __future__ import annotations

import threading
from typing import Any

from substra_flows.local_node import LocalNode

#: a closed gate never holds a task longer than this (a forgotten gate must not hang the suite)
MAX_HOLD_SECONDS = 300.0


class _GatedExecutor:
    """The node's executor, with ``run_task`` waiting for the gate."""

    def __init__(self, executor: Any, opened: threading.Event) -> None:
        self._executor = executor
        self._opened = opened

    def run_task(self, **kwargs: Any) -> Any:
        self._opened.wait(MAX_HOLD_SECONDS)
        return self._executor.run_task(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executor, name)


class TaskGate:
    """Open by default; ``close()`` holds every task the node starts until ``open()``."""

    def __init__(self, node: LocalNode) -> None:
        self._opened = threading.Event()
        self._opened.set()
        scheduler = node._scheduler  # the node's own scheduler thread calls run_task on this executor
        assert scheduler is not None, "start the node before gating it"
        scheduler._executor = _GatedExecutor(scheduler._executor, self._opened)

    def close(self) -> None:
        """Hold the next tasks (one already running finishes)."""
        self._opened.clear()

    def open(self) -> None:
        """Let held and later tasks run."""
        self._opened.set()

    @property
    def is_open(self) -> bool:
        """False while tasks are held."""
        return self._opened.is_set()
