"""LocalNode: the server, the task scheduler and the executor, started and stopped together."""

from __future__ import annotations

import datetime as dt
import heapq
import ipaddress
import logging
import secrets
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .api import NodeApi, OrganizationContext
from .executor import Executor, ExecutorError
from .faults import FaultConfig, FaultInjector
from .limits import NodeLimits, guarded_protocol, harden
from .store import (
    PLAN_CANCELED,
    PLAN_FAILED,
    TASK_DONE,
    TASK_EXECUTING,
    TASK_FAILED,
    TASK_WAITING_EXECUTOR,
    TASK_WAITING_PARENTS,
    Store,
    now,
)

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


class Scheduler:
    """Runs tasks whose parents are done, one at a time, oldest first, through the executor."""

    def __init__(self, store: Store, executor: Executor, workdir: Path) -> None:
        self._store = store
        self._executor = executor
        self._workdir = workdir
        self._wakeup = threading.Condition(store.lock)
        self._ready: list[tuple[int, str]] = []
        self._queued: set[str] = set()
        self._stopping = False
        self._paused = threading.Event()
        self._mirrored: set[tuple[str, str]] = set()
        self._thread = threading.Thread(target=self._loop, name="substra-flows-scheduler", daemon=True)

    def start(self) -> None:
        """Start the scheduling thread."""
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop after the task it runs, and wait for it."""
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        self._thread.join(timeout=60)

    def poke(self) -> None:
        """New tasks were registered: queue those ready to run."""
        with self._wakeup:
            for key, task in self._store.tasks.items():
                if task["status"] == TASK_WAITING_EXECUTOR and key not in self._queued:
                    self._push(task)
            self._wakeup.notify_all()

    def _push(self, task: dict[str, Any]) -> None:
        heapq.heappush(self._ready, (task["_seq"], task["key"]))
        self._queued.add(task["key"])

    def _next_task(self) -> dict[str, Any] | None:
        """Pop the oldest runnable task, skipping those whose plan was cancelled or failed."""
        while self._ready:
            _, key = heapq.heappop(self._ready)
            self._queued.discard(key)
            task = self._store.tasks[key]
            plan = self._store.plans[task["compute_plan_key"]]
            self._store.refresh_plan(plan)
            if task["status"] != TASK_WAITING_EXECUTOR or plan["status"] in (PLAN_CANCELED, PLAN_FAILED):
                continue
            return task
        return None

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                task = None
                while not self._stopping:
                    task = self._next_task()
                    if task is not None:
                        break
                    self._wakeup.wait()
                if self._stopping:
                    return
                assert task is not None
                task["status"] = TASK_EXECUTING
                task["start_date"] = now()
                self._store.refresh_plan(self._store.plans[task["compute_plan_key"]])
                job = self._job(task)
            try:
                self._mirror(job["mirror"])
                result = self._executor.run_task(**job["run"])
                ok, outputs = result.ok, result.outputs
                error_type = None if ok else "EXECUTION_ERROR"
            except ExecutorError as exc:
                logger.error("task %s could not be run: %s", task["key"], exc)
                with open(job["run"]["log_path"], "a", encoding="utf-8") as log:
                    log.write(f"\nlocal node: the task could not be run: {exc}\n")
                ok, outputs, error_type = False, [], "INTERNAL_ERROR"
            with self._wakeup:
                self._finish(task, ok, outputs, error_type, job["run"]["log_path"])

    def _job(self, task: dict[str, Any]) -> dict[str, Any]:
        """Snapshot (under the lock) of what the executor needs to run a task."""
        store = self._store
        function = store.functions[task["function"]["key"]]
        plan = store.plans[task["compute_plan_key"]]
        mirror: list[tuple[str, dict[str, Any]]] = [
            (
                "function",
                {
                    "owner": function["owner"],
                    "key": function["key"],
                    "name": function["name"],
                    "archive_path": function["_archive_path"],
                    "description_path": function["_description_path"],
                    "permissions": function["permissions"]["process"],
                    "inputs": function["inputs"],
                    "outputs": function["outputs"],
                },
            ),
            ("plan", {"owner": plan["owner"], "key": plan["key"], "name": plan["name"]}),
        ]
        dataset_key = None
        for entry in task["inputs"]:
            kind = function["inputs"][entry["identifier"]]["kind"]
            if kind == "ASSET_DATA_MANAGER":
                dataset = store.datasets[entry["asset_key"]]
                dataset_key = dataset["key"]
                mirror.append(
                    (
                        "dataset",
                        {
                            "owner": dataset["owner"],
                            "key": dataset["key"],
                            "name": dataset["name"],
                            "opener_path": dataset["_opener_path"],
                            "description_path": dataset["_description_path"],
                            "permissions": dataset["permissions"]["process"],
                            "logs_permission": dataset["logs_permission"],
                        },
                    )
                )
        for entry in task["inputs"]:
            kind = function["inputs"][entry["identifier"]]["kind"]
            if kind == "ASSET_DATA_SAMPLE" and dataset_key:
                sample = store.samples[entry["asset_key"]]
                mirror.append(
                    (
                        "sample",
                        {
                            "owner": sample["owner"],
                            "key": sample["key"],
                            "path": sample["_path"],
                            "dataset_key": dataset_key,
                        },
                    )
                )
        return {
            "mirror": mirror,
            "run": {
                "owner": task["owner"],
                "key": task["key"],
                "function_key": function["key"],
                "compute_plan_key": plan["key"],
                "worker": task["worker"],
                "rank": task["rank"],
                "inputs": task["inputs"],
                "outputs": {i: {"permissions": o["permissions"]["process"]} for i, o in task["outputs"].items()},
                "log_path": str(self._workdir / "logs" / f"{task['key']}.txt"),
            },
        }

    def _mirror(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Register in the SDK, once each, the assets a task needs (the SDK wants them in its own DB)."""
        for kind, spec in items:
            if kind == "sample":
                sample_id = ("sample", spec["key"])
                link_id = ("link", f"{spec['dataset_key']}/{spec['key']}")
                if sample_id not in self._mirrored:
                    self._executor.add_data_sample(
                        owner=spec["owner"],
                        key=spec["key"],
                        path=spec["path"],
                        dataset_keys=[spec["dataset_key"]],
                    )
                    self._mirrored.update({sample_id, link_id})
                elif link_id not in self._mirrored:
                    self._executor.link_data_samples(
                        owner=spec["owner"], dataset_key=spec["dataset_key"], data_sample_keys=[spec["key"]]
                    )
                    self._mirrored.add(link_id)
                continue
            ident = (kind, spec["key"])
            if ident in self._mirrored:
                continue
            if kind == "function":
                self._executor.add_function(**spec)
            elif kind == "plan":
                self._executor.add_compute_plan(**spec)
            elif kind == "dataset":
                self._executor.add_dataset(**spec)
            self._mirrored.add(ident)

    def _finish(
        self,
        task: dict[str, Any],
        ok: bool,
        outputs: list[dict[str, Any]],
        error_type: str | None,
        log_path: str,
    ) -> None:
        store = self._store
        stamp = now()
        task["end_date"] = stamp
        task["_log_path"] = log_path
        plan = store.plans[task["compute_plan_key"]]
        if ok:
            task["status"] = TASK_DONE
            for out in outputs:
                if out["kind"] == "ASSET_PERFORMANCE":
                    store.performances.setdefault(task["key"], []).append(
                        {
                            "channel": "mychannel",
                            "compute_task_key": task["key"],
                            "creation_date": stamp,
                            "compute_task_output_identifier": out["identifier"],
                            "performance_value": out["value"],
                        }
                    )
                else:
                    store.models[out["key"]] = {
                        "key": out["key"],
                        "compute_task_key": task["key"],
                        "permissions": task["outputs"][out["identifier"]]["permissions"],
                        "owner": task["worker"],
                        "creation_date": stamp,
                        "_identifier": out["identifier"],
                        "_path": out["path"],
                        "_checksum": out["checksum"],
                    }
            for child_key in store.children.get(task["key"], []):
                child = store.tasks[child_key]
                if child["status"] == TASK_WAITING_PARENTS and all(
                    store.tasks[p]["status"] == TASK_DONE for p in child["_parents"]
                ):
                    child["status"] = TASK_WAITING_EXECUTOR
                    self._push(child)
        else:
            task["status"] = TASK_FAILED
            task["error_type"] = error_type
            if plan["failed_task_key"] is None:
                plan["failed_task_key"] = task["key"]
        store.refresh_plan(plan)


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
        limits: NodeLimits | None = None,
    ) -> None:
        if organizations < 1:
            raise ValueError(f"organizations must be >= 1, got {organizations!r}")
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
        self.fault_injector: FaultInjector | None = None
        self.organizations: list[NodeOrganization] = []
        self.store = Store()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._executor: Executor | None = None
        self._scheduler: Scheduler | None = None
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
        self._scheduler = Scheduler(self.store, self._executor, workdir)
        self.api = NodeApi(
            self.store,
            contexts,
            workdir,
            media_root,
            on_tasks_ready=self._scheduler.poke if self._run_tasks else (lambda: None),
            token_lifetime=self._token_lifetime,
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
        self.fault_injector = FaultInjector(harden(self.api.build_app(), self.limits), expire_token=self._expire_token)
        self.fault_injector.configure(self._faults)
        config = uvicorn.Config(
            self.fault_injector,
            log_level=self._log_level,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
            http=guarded_protocol(self.limits),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="substra-flows-node", daemon=True
        )
        self._scheduler.start()
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

    def _expire_token(self, value: str) -> None:
        with self.store.lock:
            token = self.store.tokens.get(value)
            if token is not None:
                token.expires_at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)

    def stop(self) -> None:
        """Stop everything and delete the temp dir."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._scheduler is not None:
            self._scheduler.stop()
        if self._executor is not None:
            self._executor.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp.name, ignore_errors=True)
            self._tmp = None
        self._server = self._thread = self._scheduler = self._executor = None

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until no task is waiting or executing (tests use it to let a node drain)."""
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        while dt.datetime.now() < deadline:
            with self.store.lock:
                busy = any(
                    t["status"] in (TASK_EXECUTING, TASK_WAITING_EXECUTOR)
                    and self.store.plans[t["compute_plan_key"]]["status"] not in (PLAN_CANCELED, PLAN_FAILED)
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
