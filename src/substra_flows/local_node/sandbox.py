"""Confinement of the code an organization runs on the node: its task's functions.

A real deployment runs each task in a pod that sees only its own inputs. Here task code runs as
the node's own user, so it is confined in two ways:

* **environment**: it starts from :func:`clean_environment` (locale, ``PATH``, its own ``HOME``
  and ``TMPDIR``, plus its image's ``ENV`` lines), never the node's environment, so tokens and
  host secrets (``SUBSTRA_*``, cloud credentials...) do not reach it;
* **file system** (Linux Landlock, unprivileged, kernel 5.13+): :class:`Confinement` lets the
  process read the system and Python installation, its own image, and the inputs the permission
  checks gave the task, and write only to its own working folders. Everything else, the node's
  store with every organization's openers, samples, models and logs above all, is refused by
  the kernel (``PermissionError``).

Without Landlock (another OS, an old kernel) the file system part is skipped and a warning says
so once; :func:`landlock_abi` tells which applies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import site
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

logger = logging.getLogger("substra_flows.local_node")

#: environment variables a task keeps from the node (none of them carries a secret)
KEPT_VARIABLES = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "LC_NUMERIC", "TZ", "TERM")
#: read-only system trees a Python process needs (libraries, certificates, locale); of /proc, only
#: the process's own folder and a few system-wide figures (never another process's environment)
SYSTEM_TREES = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/sys")

# Landlock, include/uapi/linux/landlock.h
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_ALL_ABI1 = (1 << 13) - 1  # execute ... make_sym
_REFER, _TRUNCATE = 1 << 13, 1 << 14
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_warned = threading.Event()


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unavailable (not Linux, old kernel, disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(version))


def clean_environment(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a task starts from: the locale and ``PATH`` of the node, its own ``HOME`` and
    ``TMPDIR``, then ``extra`` (the image's ``ENV`` lines), nothing else of the node's."""
    env = {name: os.environ[name] for name in KEPT_VARIABLES if name in os.environ}
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update({"HOME": str(home), "TMPDIR": str(tmp), "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra or {})
    env.pop("PYTHONHOME", None)
    return env


def python_trees(hidden: Iterable[Path] = ()) -> list[Path]:
    """The Python installation and import folders task code may read: prefixes, site-packages and
    every ``sys.path`` folder (an editable install's source tree, for pip's and importlib's scans),
    except the current folder and any folder holding one of ``hidden``."""
    trees = {sys.base_prefix, sys.prefix, sys.exec_prefix, *site.getsitepackages(), *sys.path}
    if site.ENABLE_USER_SITE:
        trees.add(site.getusersitepackages())
    trees.add(str(Path(sys.executable).resolve().parent.parent))
    secret = [Path(h).resolve() for h in [Path.cwd(), *hidden]]
    kept = []
    for tree in sorted(t for t in trees if t):
        path = Path(tree).resolve()
        if path.is_dir() and not any(s == path or path in s.parents for s in secret):
            kept.append(path)
    return kept


# Run first in the confined process (a fresh interpreter, before any thread exists): restrict it
# with the ruleset built by the node, allow its own /proc/self (a rule only it can make), then
# become the task's interpreter. argv: ruleset fd, program, its arguments.
_LAUNCHER = """
import ctypes, ctypes.util, os, sys
libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
class Rule(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]
ruleset = int(sys.argv[1])
own = os.open("/proc/self", os.O_PATH | os.O_CLOEXEC)
rule = Rule(13, own)  # execute | read_file | read_dir
if libc.syscall(445, ruleset, 1, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:  # landlock_add_rule
    sys.exit("local node: landlock_add_rule(/proc/self) failed: " + os.strerror(ctypes.get_errno()))
os.close(own)
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    sys.exit("local node: prctl(PR_SET_NO_NEW_PRIVS) failed: " + os.strerror(ctypes.get_errno()))
if libc.syscall(446, ruleset, ctypes.c_uint32(0)) != 0:  # landlock_restrict_self
    sys.exit("local node: landlock_restrict_self failed: " + os.strerror(ctypes.get_errno()))
os.close(ruleset)
os.execvp(sys.argv[2], sys.argv[2:])
"""
#: files of /proc that are not about a process (CPU and memory figures libraries read)
_PROC_FILES = ("/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/loadavg", "/proc/sys/kernel")


class Confinement:
    """Landlock rules for one program: what it may read (and execute), where it may write.

    ``with Confinement(readable, writable, hidden) as confined:`` then run ``confined.argv(command)``
    with ``pass_fds=confined.fds``; ``hidden`` (the node's store) is never granted through a Python
    folder that holds it. Without Landlock, ``argv`` returns the command unchanged (and a
    warning is logged once).
    """

    def __init__(self, readable: Iterable[Path], writable: Iterable[Path], hidden: Iterable[Path] = ()) -> None:
        self.readable = [Path(p) for p in readable]
        self.writable = [Path(p) for p in writable]
        self.hidden = [Path(p) for p in hidden]
        self.abi = landlock_abi()
        self._ruleset: int | None = None

    def __enter__(self) -> Confinement:
        if self.abi < 1:
            if not _warned.is_set():
                _warned.set()
                logger.warning(
                    "Landlock is not available on this system: task code runs with a clean environment "
                    "but can read every file the node's user can, other organizations' data included"
                )
            return self
        handled = _ALL_ABI1 | (_REFER if self.abi >= 2 else 0) | (_TRUNCATE if self.abi >= 3 else 0)
        attr = _RulesetAttr(handled)
        ruleset = _libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), ctypes.c_uint32(0))
        if ruleset < 0:
            raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
        try:
            read = _EXECUTE | _READ_FILE | _READ_DIR
            for tree in SYSTEM_TREES:
                self._allow(ruleset, Path(tree), read, handled)
            for name in _PROC_FILES:
                self._allow(ruleset, Path(name), read, handled)
            self._allow(ruleset, Path("/dev"), _READ_FILE | _WRITE_FILE | _READ_DIR | _TRUNCATE, handled)
            for path in [*python_trees(self.hidden), *self.readable]:
                self._allow(ruleset, path, read, handled)
            for path in self.writable:
                self._allow(ruleset, path, handled, handled)
        except BaseException:
            os.close(ruleset)
            raise
        self._ruleset = ruleset
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ruleset is not None:
            os.close(self._ruleset)
            self._ruleset = None

    @property
    def confined(self) -> bool:
        """Whether the kernel enforces the rules (Landlock available)."""
        return self._ruleset is not None

    @property
    def fds(self) -> tuple[int, ...]:
        """File descriptors the launched program must inherit."""
        return () if self._ruleset is None else (self._ruleset,)

    def argv(self, command: list[str]) -> list[str]:
        """``command`` run through the confining launcher (unchanged when not confined)."""
        if self._ruleset is None:
            return list(command)
        return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(self._ruleset), *command]

    @staticmethod
    def _allow(ruleset: int, path: Path, access: int, handled: int) -> None:
        if not path.exists():
            return
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            if not path.is_dir():
                access &= _FILE_RIGHTS  # directory rights on a file are refused (EINVAL)
            rule = _PathBeneathAttr(access & handled, fd)
            if _libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
        finally:
            os.close(fd)
