"""Task execution for the local node, delegated to the official substra SDK's subprocess backend.

The SDK keeps its assets in a process-wide database, numbers its organizations with a global
counter and writes a ``local-worker`` folder into the current directory. To keep all of that
away from the process that hosts the node (a test run, an Airflow worker...), the SDK lives in
a dedicated child process whose working directory is the node's temp dir. The node sends it
commands over a pipe and gets plain dicts back.

A task's stdout and stderr are captured into a log file by pointing file descriptors 1 and 2
of the child at that file while the SDK runs the task (the SDK does not capture output itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


class ExecutorError(RuntimeError):
    """The executor process refused a command or died."""


@dataclass
class TaskResult:
    """What running one task produced."""

    ok: bool
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


class Executor:
    """Client side of the executor process: one command at a time, in order."""

    def __init__(self, workdir: Path, organization_ids: list[str]) -> None:
        self._workdir = workdir
        self._lock = threading.Lock()
        # A plain child interpreter (not multiprocessing's spawn, which re-imports the caller's
        # __main__) talking over two pipes wrapped as multiprocessing Connections.
        cmd_read, cmd_write = os.pipe()
        res_read, res_write = os.pipe()
        # The executor's own output (the SDK's progress bars and logs) goes to a file, not the caller's terminal.
        self._log = open(workdir / "executor.log", "ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "substra_flows.local_node.executor_process",
                str(cmd_read),
                str(res_write),
                workdir.as_posix(),
            ]
            + organization_ids,
            pass_fds=(cmd_read, res_write),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
        )
        os.close(cmd_read)
        os.close(res_write)
        self._send_conn = Connection(cmd_write, readable=False)
        self._recv_conn = Connection(res_read, writable=False)
        self._call("ping")

    def _call(self, command: str, **kwargs: Any) -> Any:
        with self._lock:
            try:
                self._send_conn.send((command, kwargs))
                status, payload = self._recv_conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                raise ExecutorError(f"the executor process is gone ({exc})") from exc
        if status != "ok":
            raise ExecutorError(payload)
        return payload

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

    def run_task(self, **kwargs: Any) -> TaskResult:
        """Run one task to completion; its output goes to ``log_path``."""
        return TaskResult(**self._call("run_task", **kwargs))

    def close(self, timeout: float = 10.0) -> None:
        """Stop the executor process, killing it if it does not stop in time."""
        if self._process.poll() is None:
            try:
                with self._lock:
                    self._send_conn.send(("stop", {}))
            except (OSError, BrokenPipeError):
                pass
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout)
        self._send_conn.close()
        self._recv_conn.close()
        self._log.close()


def _child_env() -> dict[str, str]:
    """The caller's environment, with this package importable even when found through a relative path."""
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
    """The SDK's subprocess spawner, but in the function's built image (``build.py``): a fresh copy of
    its file system per task, its WORKDIR as current directory, its venv's Python and its ENV."""

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

        from substra.sdk.backends.local.compute.spawner import subprocess as sdk_spawner
        from substra.sdk.backends.local.compute.spawner.base import (
            VOLUME_INPUTS,
            ExecutionError,
            write_command_args_file,
        )

        image = self.image
        if image is None:  # no image (a node without a build phase): the SDK's own behaviour
            sdk_spawner.Subprocess(self._local_worker_dir).spawn(
                name, archive_path, command_args_tpl, data_sample_paths, local_volumes, envs
            )
            return
        with tempfile.TemporaryDirectory(dir=self._local_worker_dir) as task_dir:
            root = Path(task_dir) / "fs"
            shutil.copytree(image["root"], root, symlinks=True)
            cwd = root / image["workdir"]
            cwd.mkdir(parents=True, exist_ok=True)
            script, function_name = sdk_spawner._get_entrypoint_from_dockerfile(Path(image["context"]))
            args_file = Path(task_dir) / "arguments.txt"
            write_command_args_file(
                args_file, sdk_spawner._get_command_args(function_name, command_args_tpl, local_volumes)
            )
            if data_sample_paths:
                sdk_spawner._symlink_data_samples(data_sample_paths, local_volumes[VOLUME_INPUTS])
            env = {**os.environ, **image["env"]}
            env.pop("PYTHONHOME", None)
            try:
                subprocess.run([image["python"], str(cwd / script), f"@{args_file}"], check=True, cwd=cwd, env=env)
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
