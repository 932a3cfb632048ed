"""LocalNode: the server, the task scheduler and the executor, started and stopped together."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .api import NodeApi, OrganizationContext
from .build import Builder
from .executor import Executor
from .faults import FaultConfig, FaultInjector
from .limits import NodeLimits, guarded_protocol, harden
from .replication import Replica
from .scheduler import Scheduler
from .sizes import MAX_MESSAGE_BYTES
from .store import (
    FUNCTION_BUILDING,
    FUNCTION_WAITING,
    TASK_EXECUTING,
    TASK_WAITING_BUILDER,
    TASK_WAITING_EXECUTOR,
    Store,
)
from .throttle import DEFAULT_LOGIN_RATE, LoginThrottle

logger = logging.getLogger("substra_flows.local_node")


@dataclass(frozen=True)
class NodeOrganization:
    """How to reach and authenticate as one organization of the node."""

    url: str
    organization_id: str
    name: str
    username: str
    password: str
    token: str
    #: the only folder under which this organization may register server-path data samples
    servermedias_root: Path | None = None

    def __repr__(self) -> str:
        return (
            f"NodeOrganization(url={self.url!r}, organization_id={self.organization_id!r}, username={self.username!r})"
        )


#: seconds a task may run before it is stopped and FAILED (LocalNode(task_time_limit=...))
DEFAULT_TASK_TIME_LIMIT = 3600.0


def is_loopback(host: str) -> bool:
    """True when ``host`` only reaches this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _free_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    return sock


class LocalNode:
    """A Substra node on 127.0.0.1 for N organizations, with real task execution; ephemeral.

    ``with LocalNode(organizations=2) as node:`` starts it on a free loopback port;
    ``node.organizations[i]`` has ``url``, ``organization_id``, ``username``, ``password``, ``token``.
    Everything lives in memory and in a temp dir removed on exit. ``run_tasks=False`` registers
    tasks without ever starting them (for registration and listing benchmarks); ``faults`` turns
    on fault injection (see ``faults.py``).

    What a deployment configures, with defaults of a default deployment (the package docstring
    lists each real-deployment behaviour and the option that shapes it):
    ``model_export`` (the channel's ``model_export_enabled``, off), ``build_seconds`` (how long each
    function's build takes at least, 1 s), ``builder_slots`` (builds at a time, 1), ``build_env``
    (environment of the build's RUN lines, e.g. ``{"PIP_NO_INDEX": "1"}`` offline),
    ``replication_lag`` (seconds before one organization sees what another wrote, 0),
    ``login_throttle`` (anonymous calls and logins a minute per IP, 40; None: off) and
    ``max_message_bytes`` (the orchestrator's message cap behind ``bulk_create``'s 413, 4 MiB; None: off).
    """

    def __init__(
        self,
        organizations: int = 2,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workdir: str | Path | None = None,
        servermedias_root: str | Path | None = None,
        token_lifetime: dt.timedelta = dt.timedelta(hours=24),
        log_level: str = "warning",
        run_tasks: bool = True,
        faults: FaultConfig | None = None,
        model_export: bool = False,
        build_seconds: float = 1.0,
        builder_slots: int = 1,
        build_env: Mapping[str, str] | None = None,
        replication_lag: float = 0.0,
        login_throttle: int | None = DEFAULT_LOGIN_RATE,
        max_message_bytes: int | None = MAX_MESSAGE_BYTES,
        limits: NodeLimits | None = None,
        task_time_limit: float | None = DEFAULT_TASK_TIME_LIMIT,
    ) -> None:
        if organizations < 1:
            raise ValueError(f"organizations must be >= 1, got {organizations!r}")
        if build_seconds < 0:
            raise ValueError(f"build_seconds must be >= 0, got {build_seconds!r}")
        if builder_slots < 1:
            raise ValueError(f"builder_slots must be >= 1, got {builder_slots!r}")
        self._model_export = model_export
        self._build_seconds = build_seconds
        self._builder_slots = builder_slots
        self._build_env = dict(build_env or {})
        self._throttle = LoginThrottle(login_throttle) if login_throttle is not None else None
        self._max_message_bytes = max_message_bytes
        self._requested = organizations
        self._host = host
        self._port = port
        self._given_workdir = Path(workdir) if workdir else None
        self._given_media_root = Path(servermedias_root) if servermedias_root else None
        self._token_lifetime = token_lifetime
        self._log_level = log_level
        self._run_tasks = run_tasks
        self._faults = faults
        #: the HTTP edge's limits (body sizes, sample archives, slow connections; see limits.py)
        self.limits = limits or NodeLimits()
        if task_time_limit is not None and task_time_limit <= 0:
            raise ValueError(f"task_time_limit must be > 0 or None, got {task_time_limit!r}")
        self._task_time_limit = task_time_limit
        self.fault_injector: FaultInjector | None = None
        self.organizations: list[NodeOrganization] = []
        self._replication_lag = replication_lag
        self.store = Store(replica=Replica(replication_lag))
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._executor: Executor | None = None
        self._scheduler: Scheduler | None = None
        self._builder: Builder | None = None
        self.api: NodeApi | None = None

    @property
    def url(self) -> str:
        """Root URL of the server (organizations live under ``/org-N``)."""
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        """The TCP port the node listens on."""
        return self._port

    @property
    def executor_pid(self) -> int | None:
        """Process id of the task executor now running (it changes when the node restarts it)."""
        return None if self._executor is None else self._executor.pid()

    @property
    def executor_restart_seconds(self) -> list[float]:
        """How long each restart of the task executor took, after it died."""
        return [] if self._executor is None else list(self._executor.restart_seconds)

    @property
    def servermedias_root(self) -> Path:
        """Root of the server media folders: organization ``org-N`` registers server-path data
        samples (``local=False``) under ``<root>/org-N/`` only (``organizations[i].servermedias_root``)."""
        assert self.api is not None, "the node is not started"
        return self.api.servermedias_root

    def start(self) -> LocalNode:
        """Start executor, scheduler and HTTP server; return when the server accepts connections."""
        import uvicorn

        if self._given_workdir:
            workdir = self._given_workdir
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="substra-flows-node-")
            workdir = Path(self._tmp.name)
        media_root = self._given_media_root or workdir / "servermedias"
        media_root.mkdir(parents=True, exist_ok=True)
        contexts = [
            OrganizationContext(
                index=i,
                organization_id=f"MyOrg{i}MSP",
                name=f"org-{i}",
                username=f"org-{i}",
                password=secrets.token_urlsafe(12),
            )
            for i in range(1, self._requested + 1)
        ]
        self._executor = Executor(workdir, [c.organization_id for c in contexts])
        self._scheduler = Scheduler(self.store, self._executor, workdir, task_time_limit=self._task_time_limit)
        poke = self._scheduler.poke if self._run_tasks else (lambda: None)
        self._builder = Builder(
            self.store,
            workdir,
            slots=self._builder_slots,
            seconds=self._build_seconds,
            env=self._build_env,
            on_built=poke,
        )
        self.api = NodeApi(
            self.store,
            contexts,
            workdir,
            media_root,
            on_tasks_ready=poke,
            token_lifetime=self._token_lifetime,
            model_export=self._model_export,
            on_function_registered=self._builder.submit,
            throttle=self._throttle,
            replica=self.store.replica,
            max_message_bytes=self._max_message_bytes,
            limits=self.limits,
        )
        sock = _free_socket(self._host, self._port)
        self._port = sock.getsockname()[1]
        if not is_loopback(self._host):
            logger.warning(
                "the local node listens on %s, beyond loopback: anyone who can reach this address gets every "
                "organization's API (its data, and the tokens printed at start); it is meant for 127.0.0.1",
                self._host,
            )
        self.fault_injector = FaultInjector(
            harden(self.api.build_app(), self.limits),
            expire_token=self._expire_token,
            replication_lag=self._set_replication_lag,
        )
        self.fault_injector.configure(self._faults)
        config = uvicorn.Config(
            self.fault_injector,
            log_level=self._log_level,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=3,  # stop() must not wait for a slow download to end
            http=guarded_protocol(self.limits),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="substra-flows-node", daemon=True
        )
        self._scheduler.start()
        self._builder.start()
        self._thread.start()
        deadline = dt.datetime.now() + dt.timedelta(seconds=30)
        while not self._server.started:
            if not self._thread.is_alive() or dt.datetime.now() > deadline:
                self.stop()
                raise RuntimeError("the local node's HTTP server did not start")
            threading.Event().wait(0.02)
        for context in contexts:
            token = self.api.issue_token(context, implicit=False, lifetime=dt.timedelta(days=365), note="ready token")
            self.organizations.append(
                NodeOrganization(
                    url=f"{self.url}{context.prefix}",
                    organization_id=context.organization_id,
                    name=context.name,
                    username=context.username,
                    password=context.password,
                    token=token.token,
                    servermedias_root=self.api.servermedias.folder(context.name),
                )
            )
        return self

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Start injecting faults (see ``faults.py``), or stop with None; counters restart."""
        assert self.fault_injector is not None, "the node is not started"
        self.fault_injector.configure(faults)

    def fault_stats(self) -> dict[str, Any]:
        """Requests seen and faults injected by kind since faults were last configured."""
        assert self.fault_injector is not None, "the node is not started"
        return self.fault_injector.stats()

    def _set_replication_lag(self, seconds: float | None) -> None:
        """The fault kind ``replication_lag`` turns the lag on; None restores ``LocalNode(replication_lag=...)``."""
        assert self.store.replica is not None
        self.store.replica.set_lag(self._replication_lag if seconds is None else seconds)

    def _expire_token(self, value: str) -> None:
        with self.store.lock:
            token = self.store.tokens.get(value)
            if token is not None:
                token.expires_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)

    def stop(self) -> None:
        """Stop everything and delete the temp dir, within seconds whatever runs: the task in
        progress and the build steps in progress are killed."""
        if self._server is not None:
            self._server.should_exit = True
        if self._scheduler is not None:
            self._scheduler.stop()  # closes the executor, cutting the task it runs
        if self._builder is not None:
            self._builder.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._executor is not None:
            self._executor.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp.name, ignore_errors=True)
            self._tmp = None
        self._server = self._thread = self._scheduler = self._executor = self._builder = None

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until no task is waiting or executing (tests use it to let a node drain)."""
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        while dt.datetime.now() < deadline:
            with self.store.lock:
                busy = any(f["status"] in (FUNCTION_WAITING, FUNCTION_BUILDING) for f in self.store.functions.values())
                busy = busy or any(
                    t["status"] in (TASK_EXECUTING, TASK_WAITING_EXECUTOR, TASK_WAITING_BUILDER, "STATUS_BUILDING")
                    for t in self.store.tasks.values()
                )
            if not busy:
                return
            threading.Event().wait(0.05)
        raise TimeoutError(f"the local node was still busy after {timeout} s")

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
