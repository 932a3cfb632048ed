"""Task execution for the local node, delegated to the official substra SDK's subprocess backend.

The SDK keeps its assets in a process-wide database, numbers its organizations with a global
counter and writes a ``local-worker`` folder into the current directory. To keep all of that
away from the process that hosts the node (a test run, an Airflow worker...), the SDK lives in
a dedicated child process whose working directory is the node's temp dir. The node sends it
commands over a pipe and gets plain dicts back.

A task's stdout and stderr are captured into a log file by pointing file descriptors 1 and 2
of the child at that file while the SDK runs the task (the SDK does not capture output itself).

The node supervises that process: it runs in a process group of its own (the function processes
it starts included), a command that outlives its time limit, or whose task is cancelled, or that
is running when the node stops, has the whole group killed; a process that died is started
again on the next command (:meth:`Executor.ensure_running`), and ``generation`` tells the
scheduler that the fresh process knows nothing of the assets mirrored into the dead one. Task
code itself runs confined (``sandbox.py``): a clean environment, and with Landlock only its own
image, inputs and working folders on the file system.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


class ExecutorError(RuntimeError):
    """The executor process refused a command or died."""


class ExecutorDied(ExecutorError):
    """The executor process ended by itself (killed from outside, crashed) during a command."""


class TaskStopped(ExecutorError):
    """The node stopped the command's process group: ``reason`` is "time_limit", "cancel" or "stop"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


#: how often a running command checks its time limit, its cancellation and the process
_POLL_SECONDS = 0.1


@dataclass
class TaskResult:
    """What running one task produced."""

    ok: bool
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


class Executor:
    """Client side of the executor process: one command at a time, in order, supervised."""

    def __init__(self, workdir: Path, organization_ids: list[str]) -> None:
        self._workdir = workdir
        self._organization_ids = list(organization_ids)
        self._lock = threading.Lock()  # one command at a time
        self._closing = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        #: incremented by each (re)start: the assets mirrored into an older process are gone
        self.generation = 0
        #: seconds each restart after a death took (start of the new process to its first answer)
        self.restart_seconds: list[float] = []
        # The executor's own output (the SDK's progress bars and logs) goes to a file, not the caller's terminal.
        self._log = open(workdir / "executor.log", "ab")
        self._start()

    def _start(self) -> None:
        # A plain child interpreter (not multiprocessing's spawn, which re-imports the caller's
        # __main__) talking over two pipes wrapped as multiprocessing Connections; in a session of
        # its own, so that killing its process group also kills the function it runs.
        cmd_read, cmd_write = os.pipe()
        res_read, res_write = os.pipe()
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "substra_flows.local_node.executor_process",
                str(cmd_read),
                str(res_write),
                self._workdir.as_posix(),
            ]
            + self._organization_ids,
            pass_fds=(cmd_read, res_write),
            cwd=self._workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,
        )
        os.close(cmd_read)
        os.close(res_write)
        self._send_conn = Connection(cmd_write, readable=False)
        self._recv_conn = Connection(res_read, writable=False)
        self.generation += 1
        self._exchange("ping", {}, None, None)

    def alive(self) -> bool:
        """Whether the executor process is running."""
        return self._process is not None and self._process.poll() is None

    def ensure_running(self) -> bool:
        """Start a new executor process if the last one died; True when it did."""
        with self._lock:
            if self.alive() or self._closing.is_set():
                return False
            self._discard()
            started = time.monotonic()
            self._start()
            self.restart_seconds.append(time.monotonic() - started)
        return True

    def _call(
        self,
        command: str,
        *,
        time_limit: float | None = None,
        should_stop: Callable[[], str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        with self._lock:
            if not self.alive():
                raise ExecutorDied(f"the executor process is gone ({self._exit_text()})")
            return self._exchange(command, kwargs, time_limit, should_stop)

    def _exchange(
        self,
        command: str,
        kwargs: dict[str, Any],
        time_limit: float | None,
        should_stop: Callable[[], str | None] | None,
    ) -> Any:
        """Send one command and wait for its answer, stopping the process group when it must."""
        deadline = None if time_limit is None else time.monotonic() + time_limit
        try:
            self._send_conn.send((command, kwargs))
            while not self._recv_conn.poll(_POLL_SECONDS):
                if self._closing.is_set():
                    self._kill()
                    raise TaskStopped("stop", "the local node is stopping")
                if not self.alive():
                    break  # the answer will never come: recv reports the end of the pipe
                if deadline is not None and time.monotonic() > deadline:
                    self._kill()
                    raise TaskStopped("time_limit", f"it ran longer than the task time limit of {time_limit:g}s")
                reason = should_stop() if should_stop is not None else None
                if reason:
                    self._kill()
                    raise TaskStopped("cancel", reason)
            status, payload = self._recv_conn.recv()
        except (EOFError, OSError) as exc:
            if self._closing.is_set():
                raise TaskStopped("stop", "the local node is stopping") from exc
            self._kill()  # what the dead process started must not run on
            raise ExecutorDied(f"the executor process died ({self._exit_text()})") from exc
        if status != "ok":
            raise ExecutorError(payload)
        return payload

    def _kill(self) -> None:
        """Kill the executor and everything it started (its process group, also when the executor
        itself is already dead and a function it started is not)."""
        process = self._process
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def _exit_text(self) -> str:
        code = None if self._process is None else self._process.poll()
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def _discard(self) -> None:
        """Forget a dead process and its pipes."""
        for conn in (getattr(self, "_send_conn", None), getattr(self, "_recv_conn", None)):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
        self._process = None

    def add_dataset(self, **kwargs: Any) -> None:
        """Mirror a dataset into the SDK's database under the node's key."""
        self._call("add_dataset", **kwargs)

    def add_data_sample(self, **kwargs: Any) -> None:
        """Mirror a data sample (a folder on disk) under the node's key."""
        self._call("add_data_sample", **kwargs)

    def link_data_samples(self, **kwargs: Any) -> None:
        """Mirror a dataset <-> samples link."""
        self._call("link_data_samples", **kwargs)

    def add_function(self, **kwargs: Any) -> None:
        """Mirror a function archive under the node's key."""
        self._call("add_function", **kwargs)

    def add_compute_plan(self, **kwargs: Any) -> None:
        """Mirror an (empty) compute plan so tasks can be attached to it."""
        self._call("add_compute_plan", **kwargs)

    def restore_output(self, **kwargs: Any) -> None:
        """Mirror a model a task produced in an earlier executor process (for the tasks reading it)."""
        self._call("restore_output", **kwargs)

    def run_task(
        self, *, time_limit: float | None = None, should_stop: Callable[[], str | None] | None = None, **kwargs: Any
    ) -> TaskResult:
        """Run one task to completion; its output goes to ``log_path``. Raises TaskStopped past
        ``time_limit`` or when ``should_stop()`` gives a reason, ExecutorDied if the process dies."""
        return TaskResult(**self._call("run_task", time_limit=time_limit, should_stop=should_stop, **kwargs))

    def pid(self) -> int | None:
        """Process id of the executor (for supervision tests and benchmarks)."""
        return None if self._process is None else self._process.pid

    def close(self, timeout: float = 5.0) -> None:
        """Stop the executor process: a command in progress is cut at once (its process group
        killed), an idle process is asked to stop and killed if it does not within ``timeout``."""
        self._closing.set()
        acquired = self._lock.acquire(timeout=timeout)  # a command in progress notices within a poll
        try:
            process = self._process
            if process is not None and process.poll() is None:
                try:
                    self._send_conn.send(("stop", {}))
                    process.wait(timeout)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                self._kill()
            self._discard()
        finally:
            if acquired:
                self._lock.release()
        self._log.close()


def _child_env() -> dict[str, str]:
    """The caller's environment, with this package importable even when found through a relative path.

    The executor itself is the node's own code (the SDK); task code never gets this environment
    (see ``sandbox.clean_environment``)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


# --- child process side -------------------------------------------------------------------------


def _serve(commands: Connection, results: Connection, workdir: str, organization_ids: list[str]) -> None:
    """Executor main loop: import the SDK, create one local backend per organization, obey commands."""
    os.chdir(workdir)
    runner = _SdkRunner(organization_ids)
    handlers: dict[str, Callable[..., Any]] = {
        "ping": lambda: None,
        "add_dataset": runner.add_dataset,
        "add_data_sample": runner.add_data_sample,
        "link_data_samples": runner.link_data_samples,
        "add_function": runner.add_function,
        "add_compute_plan": runner.add_compute_plan,
        "restore_output": runner.restore_output,
        "run_task": runner.run_task,
    }
    while True:
        try:
            command, kwargs = commands.recv()
        except EOFError:
            return
        if command == "stop":
            return
        try:
            results.send(("ok", handlers[command](**kwargs)))
        except Exception as exc:  # reported to the node, which turns it into an HTTP error or a failed task
            results.send(("error", f"{type(exc).__name__}: {exc}"))


class _SdkRunner:
    """Drives the SDK's subprocess backend; one ``substra.Client`` per organization, one shared DB."""

    def __init__(self, organization_ids: list[str]) -> None:
        import substra

        self._substra = substra
        self._backends: dict[str, Any] = {}
        self._spawner = _ImageSpawner(Path.cwd() / "local-worker")  # one for all: tasks run one at a time
        for org_id in organization_ids:
            client = substra.Client(backend_type="subprocess")
            backend = client._backend
            # The SDK names its organizations MyOrg<N>MSP with a process-wide counter; the node uses
            # its own ids, so the backend is told who it is.
            backend._org_id = org_id
            backend._org_name = org_id
            backend._worker._spawner = self._spawner
            self._backends[org_id] = backend

    def _permissions(self, perms: dict[str, Any]) -> Any:
        return self._substra.sdk.schemas.Permissions(
            public=perms.get("public", False), authorized_ids=list(perms.get("authorized_ids", []))
        )

    def add_dataset(
        self,
        owner: str,
        key: str,
        name: str,
        opener_path: str,
        description_path: str,
        permissions: dict[str, Any],
        logs_permission: dict[str, Any],
    ) -> None:
        spec = self._substra.sdk.schemas.DatasetSpec(
            name=name,
            data_opener=opener_path,
            description=description_path,
            permissions=self._permissions(permissions),
            logs_permission=self._permissions(logs_permission),
        )
        self._backends[owner].add(spec, key=key)

    def add_data_sample(self, owner: str, key: str, path: str, dataset_keys: list[str]) -> None:
        spec = self._substra.sdk.schemas.DataSampleSpec(path=path, data_manager_keys=dataset_keys)
        self._backends[owner].add(spec, key=key)

    def link_data_samples(self, owner: str, dataset_key: str, data_sample_keys: list[str]) -> None:
        self._backends[owner].link_dataset_with_data_samples(dataset_key, data_sample_keys)

    def add_function(
        self,
        owner: str,
        key: str,
        name: str,
        archive_path: str,
        description_path: str,
        permissions: dict[str, Any],
        inputs: dict[str, dict[str, Any]],
        outputs: dict[str, dict[str, Any]],
    ) -> None:
        schemas = self._substra.sdk.schemas
        spec = schemas.FunctionSpec(
            name=name,
            file=archive_path,
            description=description_path,
            permissions=self._permissions(permissions),
            inputs=[schemas.FunctionInputSpec(identifier=i, **v) for i, v in inputs.items()],
            outputs=[schemas.FunctionOutputSpec(identifier=i, **v) for i, v in outputs.items()],
        )
        self._backends[owner].add(spec, key=key)

    def add_compute_plan(self, owner: str, key: str, name: str) -> None:
        spec = self._substra.sdk.schemas.ComputePlanSpec(key=key, name=name, tasks=[])
        self._backends[owner].add(spec)

    def restore_output(
        self,
        owner: str,
        task_key: str,
        compute_plan_key: str,
        rank: int,
        worker: str,
        function_key: str,
        identifier: str,
        model_key: str,
        path: str,
        checksum: str,
        permissions: dict[str, Any],
    ) -> None:
        """Put a model produced by ``task_key`` (in an executor process since gone) back into the
        SDK's database, with a DONE stand-in of its task, so that tasks reading it find it."""
        import datetime

        from substra.sdk import exceptions, models
        from substra.sdk.backends.local import models as local_models

        db = self._backends[owner]._db
        existing = db.list(
            self._substra.sdk.schemas.Type.OutputAsset, {"compute_task_key": task_key, "identifier": identifier}
        )
        if existing:
            return
        perms = models.Permission(
            public=permissions.get("public", False), authorized_ids=permissions.get("authorized_ids", [])
        )
        stamp = datetime.datetime.now()
        try:
            db.get(self._substra.sdk.schemas.Type.Task, task_key)
        except exceptions.NotFound:
            db.add(
                models.Task(
                    key=task_key,
                    function=db.get(self._substra.sdk.schemas.Type.Function, function_key),
                    owner=owner,
                    compute_plan_key=compute_plan_key,
                    metadata={},
                    status=models.ComputeTaskStatus.done,
                    worker=worker,
                    rank=rank,
                    tag="",
                    creation_date=stamp,
                    inputs=[],
                    outputs={
                        identifier: models.ComputeTaskOutput(
                            permissions=models.Permissions(process=perms), is_transient=False
                        )
                    },
                )
            )
        model = models.OutModel(
            key=model_key,
            compute_task_key=task_key,
            address=models.InModel(checksum=checksum, storage_address=path),
            creation_date=stamp,
            owner=worker,
            permissions=models.Permissions(process=perms),
        )
        db.add(model)
        db.add(
            local_models.OutputAssetLocal(
                kind=self._substra.sdk.schemas.AssetKind.model,
                identifier=identifier,
                asset=model,
                compute_task_key=task_key,
            )
        )

    def run_task(
        self,
        owner: str,
        key: str,
        function_key: str,
        compute_plan_key: str,
        worker: str,
        rank: int,
        inputs: list[dict[str, Any]],
        outputs: dict[str, dict[str, Any]],
        log_path: str,
        image: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        schemas = self._substra.sdk.schemas
        backend = self._backends[owner]
        self._spawner.image = image
        spec = schemas.TaskSpec(
            key=key,
            function_key=function_key,
            compute_plan_key=compute_plan_key,
            worker=worker,
            rank=rank,
            inputs=[schemas.InputRef(**ref) for ref in inputs],
            outputs={
                identifier: schemas.ComputeTaskOutputSpec(
                    permissions=self._permissions(out["permissions"]), is_transient=False
                )
                for identifier, out in outputs.items()
            },
        )
        try:
            with _captured_output(Path(log_path)):
                backend.add(spec, key=key)
        except Exception as exc:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write("\n" + "".join(traceback.format_exception(exc)))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        produced = []
        for asset in backend.list_task_output_assets(key):
            kind = str(asset.kind.value if hasattr(asset.kind, "value") else asset.kind)
            if kind == "ASSET_PERFORMANCE":
                produced.append({"identifier": asset.identifier, "kind": kind, "value": float(asset.asset)})
            else:
                model = asset.asset
                produced.append(
                    {
                        "identifier": asset.identifier,
                        "kind": kind,
                        "key": model.key,
                        "path": str(model.address.storage_address),
                        "checksum": model.address.checksum,
                    }
                )
        return {"ok": True, "outputs": produced}


class _ImageSpawner:
    """The SDK's subprocess spawner, but confined (``sandbox.py``) and in the function's built image
    (``build.py``): a fresh copy of its file system per task, its WORKDIR as current directory, its
    venv's Python and its ENV, a clean environment, and on the file system only the image, the
    task's own folders and the data samples the task was given."""

    def __init__(self, local_worker_dir: Path) -> None:
        self._local_worker_dir = local_worker_dir
        self.image: dict[str, Any] | None = None

    def spawn(
        self,
        name: str,
        archive_path: str,
        command_args_tpl: list[Any],
        data_sample_paths: dict[str, Path] | None,
        local_volumes: dict[str, str],
        envs: dict[str, str] | None,
    ) -> None:
        import tempfile

        from substra.sdk.archive import uncompress
        from substra.sdk.backends.local.compute.spawner import subprocess as sdk_spawner
        from substra.sdk.backends.local.compute.spawner.base import (
            VOLUME_INPUTS,
            ExecutionError,
            write_command_args_file,
        )

        from .sandbox import Confinement, clean_environment

        image = self.image
        with tempfile.TemporaryDirectory(dir=self._local_worker_dir) as task_dir:
            if image is None:  # no image (a node without a build phase): the archive, as the SDK runs it
                root = context = Path(task_dir) / "function"
                uncompress(archive_path, root)
                cwd, python, image_env, readable = root, sys.executable, {}, []
            else:
                root = Path(task_dir) / "fs"
                shutil.copytree(image["root"], root, symlinks=True)
                cwd = root / image["workdir"]
                context, python, image_env = Path(image["context"]), image["python"], image["env"]
                readable = [Path(image["root"]).parent]  # the function's own image: context, fs, venv
            cwd.mkdir(parents=True, exist_ok=True)
            script, function_name = sdk_spawner._get_entrypoint_from_dockerfile(Path(context))
            args_file = Path(task_dir) / "arguments.txt"
            write_command_args_file(
                args_file, sdk_spawner._get_command_args(function_name, command_args_tpl, local_volumes)
            )
            samples = list((data_sample_paths or {}).values())
            if data_sample_paths:
                sdk_spawner._symlink_data_samples(data_sample_paths, local_volumes[VOLUME_INPUTS])
            # the SDK's folder of this task (inputs, outputs, arguments) and ours (image copy, home)
            writable = [Path(local_volumes[VOLUME_INPUTS]).parent, Path(task_dir)]
            env = clean_environment(Path(task_dir) / "home", image_env)
            hidden = [Path.cwd()]  # the executor works in the node's folder: the store, every organization's files
            with Confinement([*readable, *(Path(p) for p in samples)], writable, hidden) as confined:
                try:
                    subprocess.run(
                        confined.argv([python, str(cwd / script), f"@{args_file}"]),
                        check=True,
                        cwd=cwd,
                        env=env,
                        pass_fds=confined.fds,
                    )
                except subprocess.CalledProcessError as exc:
                    raise ExecutionError(exc) from exc


class _captured_output:
    """Point fds 1 and 2 at a file for the duration of the block; children inherit them."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def __enter__(self) -> None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self._path, "ab")
        self._saved = (os.dup(1), os.dup(2))
        os.dup2(self._file.fileno(), 1)
        os.dup2(self._file.fileno(), 2)

    def __exit__(self, *exc: object) -> None:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        os.close(self._saved[0])
        os.close(self._saved[1])
        self._file.close()
