"""The build phase: each function's Dockerfile turned into an image folder, as the backend's builder would.

A real deployment builds a container image per function (WAITING -> BUILDING -> READY, or FAILED),
and its tasks wait meanwhile. The node has no container runtime, so an "image" is a folder:

    images/<function key>/context/   the archive, extracted (the build context)
                          fs/        the image's file system root: WORKDIR /x is fs/x
                          venv/      the function's own virtual environment
                          build.log  everything the build printed

The Dockerfile's instructions are applied in order: ``WORKDIR`` (created), ``COPY``/``ADD`` (from the
context; ADD also unpacks local tar archives), ``ENV`` and ``RUN`` (through ``/bin/sh -c``, or exec
form, in the current WORKDIR, with the function's venv first on PATH). The venv is created with the
node's own site-packages visible behind it, so ``RUN pip install substratools==1.0.0`` is satisfied
at once and ``RUN pip install ./my_dependency.whl`` really installs into that function only.

What a folder cannot be, the build says in its log and skips: ``FROM`` (the image's Python is the
node's), ``USER``, and operating-system steps inside a RUN chain (``apt-get``, ``adduser``...);
``python -m venv <path>`` is skipped too, its path becoming an alias of the function's venv (so an
``ENV PATH=<path>/bin:$PATH`` that follows points at it). RUN lines run on this machine as the node's
user: register only functions you trust, as with the SDK's own subprocess mode.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import queue
import re
import shlex
import shutil
import site
import subprocess
import sys
import tarfile
import threading
import time
import venv
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import orchestration
from .store import Store

logger = logging.getLogger("substra_flows.local_node")

# Steps of a RUN chain that only make sense inside an OS image (package managers, users, ownership).
OS_COMMANDS = frozenset(
    {"apt-get", "apt", "apk", "yum", "dnf", "microdnf", "addgroup", "adduser", "useradd", "groupadd", "chown"}
)
_VENV_STEP = re.compile(r"^\S*python[\d.]*\s+-m\s+venv\s+(?P<path>\S+)\s*$")
_PYTHON_TAG = re.compile(r"python:(?P<version>\d+\.\d+)")


class BuildError(Exception):
    """A Dockerfile step failed; the message is the last line of the build log."""


@dataclass
class Image:
    """A built function: where its tasks run and with what."""

    context: str  # the extracted archive (its Dockerfile names the entry point)
    root: str  # the image's file system root (fs/)
    workdir: str  # the final WORKDIR, relative to root
    python: str  # the venv's interpreter
    env: dict[str, str] = field(default_factory=dict)  # ENV lines, with PATH and VIRTUAL_ENV of the venv

    def as_dict(self) -> dict[str, Any]:
        """Plain form, sent to the executor process."""
        return {
            "context": self.context,
            "root": self.root,
            "workdir": self.workdir,
            "python": self.python,
            "env": dict(self.env),
        }


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            instruction, _, args = line.partition(" ")
            steps.append((instruction.upper(), args.strip()))
    if pending.strip():
        instruction, _, args = pending.strip().partition(" ")
        steps.append((instruction.upper(), args.strip()))
    return steps


class ImageBuilder:
    """Applies one function's Dockerfile to its image folder."""

    def __init__(self, folder: Path, build_env: Mapping[str, str], log: Any) -> None:
        self.folder = folder
        self.context = folder / "context"
        self.root = folder / "fs"
        self.venv = folder / "venv"
        self.workdir = PurePosixPath("/")
        self.env: dict[str, str] = {}
        self.aliases: dict[str, str] = {}
        self._build_env = dict(build_env)
        self._log = log

    def note(self, message: str) -> None:
        """A line of the node's own in the build log."""
        self._log.write(f"local node: {message}\n".encode())
        self._log.flush()

    def build(self) -> Image:
        """Create the venv, apply every instruction, return the image."""
        self.root.mkdir(parents=True, exist_ok=True)
        _create_venv(self.venv)
        self.env = {
            "VIRTUAL_ENV": str(self.venv),
            "PATH": f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        dockerfile = self.context / "Dockerfile"
        for number, (instruction, args) in enumerate(parse_dockerfile(dockerfile.read_text(encoding="utf-8")), 1):
            self._log.write(f"Step {number}: {instruction} {args}\n".encode())
            self._log.flush()
            handler = getattr(self, f"_{instruction.lower()}", None)
            if handler is None:
                self.note(f"{instruction} has no effect on the local node")
                continue
            handler(args)
        return Image(
            context=str(self.context),
            root=str(self.root),
            workdir=str(self.workdir).lstrip("/"),
            python=str(self.venv / "bin" / "python"),
            env=dict(self.env),
        )

    # ---- instructions ---------------------------------------------------------------------------

    def _from(self, args: str) -> None:
        wanted = _PYTHON_TAG.search(args)
        ours = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if wanted and wanted.group("version") != ours:
            self.note(f"the image asks for Python {wanted.group('version')}; the local node runs Python {ours}")
        else:
            self.note(f"base image {args.split()[0] if args else '?'}: the node's own Python {ours} stands for it")

    def _user(self, args: str) -> None:
        self.note(f"USER {args}: tasks run as the node's user")

    def _workdir(self, args: str) -> None:
        self.workdir = self._image_path(self._expand(args))
        self._host(self.workdir).mkdir(parents=True, exist_ok=True)

    def _env(self, args: str) -> None:
        pairs: list[tuple[str, str]] = []
        parts = shlex.split(args)
        if parts and "=" not in parts[0]:  # legacy form: ENV KEY value with spaces
            pairs.append((parts[0], " ".join(parts[1:])))
        else:
            pairs = [(p.partition("=")[0], p.partition("=")[2]) for p in parts]
        for key, value in pairs:
            self.env[key] = self._expand(self._dealias(value))

    def _arg(self, args: str) -> None:
        name, _, default = args.partition("=")
        if default and name not in self.env:
            self.env[name] = default

    def _copy(self, args: str, *, unpack: bool = False) -> None:
        parts = [p for p in _json_or_split(args) if not p.startswith("--")]
        if len(parts) < 2:
            raise BuildError(f"COPY needs a source and a destination, got {args!r}")
        *sources, dest = parts
        target = self._image_path(self._expand(dest))
        host_target = self._host(target)
        matches: list[Path] = []
        for source in sources:
            if "://" in source:
                raise BuildError(f"ADD {source}: the local node does not download files during a build")
            found = sorted(glob.glob(str(self.context / source)))
            if not found:
                raise BuildError(f"COPY failed: file not found in build context: {source}")
            matches.extend(Path(f) for f in found)
        into_folder = dest.endswith("/") or len(matches) > 1 or host_target.is_dir()
        for match in matches:
            resolved = match.resolve()
            if self.context.resolve() not in (resolved, *resolved.parents):
                raise BuildError(f"COPY failed: {match.name} is outside the build context")
            if unpack and match.is_file() and tarfile.is_tarfile(match):
                host_target.mkdir(parents=True, exist_ok=True)
                with tarfile.open(match) as archive:
                    archive.extractall(host_target, filter="data")
            elif match.is_dir():
                shutil.copytree(match, host_target, dirs_exist_ok=True, symlinks=True)
            else:
                destination = host_target / match.name if into_folder else host_target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(match, destination)

    def _add(self, args: str) -> None:
        self._copy(args, unpack=True)

    def _run(self, args: str) -> None:
        if args.startswith("["):
            command: list[str] | str = json.loads(args)
        else:
            command = self._applicable(args)
            if not command:
                return
        self._execute(command)

    # ---- helpers --------------------------------------------------------------------------------

    def _applicable(self, command: str) -> str:
        """The RUN chain without its operating-system steps (noted in the log)."""
        kept = []
        for step in (s.strip() for s in command.split("&&")):
            words = step.split()
            if not words:
                continue
            venv_step = _VENV_STEP.match(step)
            if venv_step:
                self.aliases[venv_step.group("path").rstrip("/")] = str(self.venv)
                self.note(f"skipped `{step}`: the function already has its own virtual environment")
            elif words[0] in OS_COMMANDS or (words[0] == "sudo" and len(words) > 1):
                self.note(f"skipped `{step}`: operating-system steps do not apply to the local node")
            else:
                kept.append(self._dealias(step))
        return " && ".join(kept)

    def _execute(self, command: list[str] | str) -> None:
        cwd = self._host(self.workdir)
        env = {**os.environ, **self.env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **self._build_env}
        env.pop("PYTHONHOME", None)
        argv = command if isinstance(command, list) else ["/bin/sh", "-c", command]
        self._log.flush()
        completed = subprocess.run(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, check=False
        )
        if completed.returncode != 0:
            raise BuildError(
                f"RUN {command if isinstance(command, str) else json.dumps(command)} "
                f"returned a non-zero code: {completed.returncode}"
            )

    def _image_path(self, value: str) -> PurePosixPath:
        path = PurePosixPath(value)
        return path if path.is_absolute() else self.workdir / path

    def _host(self, path: PurePosixPath) -> Path:
        parts = [p for p in path.parts if p not in ("/", "..")]
        return self.root.joinpath(*parts)

    def _dealias(self, text: str) -> str:
        for alias, real in self.aliases.items():
            text = text.replace(alias, real)
        return text

    def _expand(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.env.get(m.group(1), os.environ.get(m.group(1), "")), text)


def _json_or_split(args: str) -> list[str]:
    if args.startswith("["):
        return [str(a) for a in json.loads(args)]
    return shlex.split(args)


def _create_venv(target: Path) -> None:
    """A venv without its own pip: the node's packages (pip included) are visible behind its own."""
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(target)
    pure = Path(
        subprocess.run(
            [str(target / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    lines = [f"import site; site.addsitedir({path!r})" for path in _node_site_dirs()]
    (pure / "_substra_flows_node.pth").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in ("pip", "pip3"):
        shim = target / "bin" / name
        shim.write_text(
            f"#!{target / 'bin' / 'python'}\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n",
            encoding="utf-8",
        )
        shim.chmod(0o755)


def _node_site_dirs() -> list[str]:
    dirs = [*site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        dirs.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def build_image(archive: Path, folder: Path, build_env: Mapping[str, str], log_path: Path) -> Image:
    """Extract ``archive`` into ``folder`` and apply its Dockerfile; BuildError when a step fails."""
    from .api import _safe_extract

    if folder.exists():
        shutil.rmtree(folder)
    (folder / "context").mkdir(parents=True)
    with log_path.open("ab") as log:
        builder = ImageBuilder(folder, build_env, log)
        try:
            _safe_extract(archive.read_bytes(), builder.context)
            return builder.build()
        except BuildError as exc:
            builder.note(f"build failed: {exc}")
            raise
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            builder.note(f"build failed: {type(exc).__name__}: {exc}")
            raise BuildError(str(exc)) from exc


class Builder:
    """Builds registered functions in the background, ``slots`` at a time, each taking at least ``seconds``."""

    def __init__(
        self,
        store: Store,
        workdir: Path,
        *,
        slots: int,
        seconds: float,
        env: Mapping[str, str],
        on_built: Callable[[], None],
    ) -> None:
        if slots < 1:
            raise ValueError(f"builder_slots must be >= 1, got {slots!r}")
        if seconds < 0:
            raise ValueError(f"build_seconds must be >= 0, got {seconds!r}")
        self._store = store
        self._folder = workdir / "images"
        self._seconds = seconds
        self._env = dict(env)
        self._on_built = on_built
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"substra-flows-builder-{i}", daemon=True) for i in range(slots)
        ]

    def start(self) -> None:
        """Start the builder slots."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop after the builds in progress."""
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=60)

    def submit(self, function_key: str) -> None:
        """Queue a function just registered (status WAITING)."""
        self._queue.put(function_key)

    def _work(self) -> None:
        while True:
            key = self._queue.get()
            if key is None or self._stopping.is_set():
                return
            try:
                self._build(key)
            except Exception:  # a builder slot must survive anything one build does
                logger.exception("building function %s failed unexpectedly", key)

    def _build(self, key: str) -> None:
        with self._store.lock:
            orchestration.build_started(self._store, key)
            archive = Path(self._store.functions[key]["_archive_path"])
        started = time.monotonic()
        folder = self._folder / key
        log_path = self._folder / f"{key}.build.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            image = build_image(archive, folder, self._env, log_path)
        except BuildError:
            self._stopping.wait(max(0.0, self._seconds - (time.monotonic() - started)))
            with self._store.lock:
                orchestration.build_failed(self._store, key, str(log_path))
            return
        self._stopping.wait(max(0.0, self._seconds - (time.monotonic() - started)))
        with self._store.lock:
            self._store.functions[key]["_image"] = image.as_dict()
            orchestration.build_finished(self._store, key)
        self._on_built()
