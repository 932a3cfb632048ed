"""The sample ledger: which sample contents are already registered in a dataset, and as which key.

Data samples carry no metadata on Substra, so what a registration has done is recorded on the
client side: one JSON file per dataset (``<ledger_dir>/<url-hash>/<dataset_key>.json``) mapping
each sample's content fingerprint to its key, plus the batch in flight, if any. The file is
rewritten atomically (temporary file, fsync, rename) after each batch, and a lock file keeps two
processes of the same machine from syncing one dataset at the same time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from substra_flows.exceptions import SubstraError

try:  # POSIX only; elsewhere the lock is a no-op
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["LEDGER_ENV", "LedgerError", "PendingBatch", "SampleLedger", "default_ledger_dir", "url_hash"]

logger = logging.getLogger("substra_flows.steps")

LEDGER_ENV = "SUBSTRA_FLOWS_LEDGER_DIR"
_FORMAT = "substra-flows sample ledger"
_VERSION = 1


class LedgerError(SubstraError):
    """A ledger file is unreadable, or does not describe the dataset it is named after."""


def default_ledger_dir() -> Path:
    """``$SUBSTRA_FLOWS_LEDGER_DIR``, else ``$XDG_CACHE_HOME/substra-flows/ledgers`` (``~/.cache`` by default)."""
    if os.environ.get(LEDGER_ENV):
        return Path(os.environ[LEDGER_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "substra-flows" / "ledgers"


def url_hash(url: str) -> str:
    """Short stable name of a server URL (ledgers of different servers never mix)."""
    return hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


@dataclass
class PendingBatch:
    """A batch sent (or about to be) whose outcome is not recorded yet.

    ``foreign`` lists the dataset's sample keys the ledger did not know when the batch was sent
    (samples added by someone else); any other new key on the server can only come from this batch.
    """

    hashes: list[str]
    foreign: list[str] = field(default_factory=list)
    started_at: str = field(default_factory=_now)

    def age_seconds(self) -> float:
        """Seconds since the batch was sent (large if the timestamp is unreadable)."""
        try:
            started = dt.datetime.fromisoformat(self.started_at)
        except (TypeError, ValueError):
            return float("inf")
        return (dt.datetime.now(dt.timezone.utc) - started).total_seconds()


@dataclass
class SampleLedger:
    """Content fingerprint -> sample key, for one dataset of one server."""

    path: Path
    url: str
    dataset_key: str
    samples: dict[str, str] = field(default_factory=dict)
    pending: PendingBatch | None = None

    @classmethod
    def for_dataset(cls, ledger_dir: str | os.PathLike[str] | None, url: str, dataset_key: str) -> SampleLedger:
        """The (not yet loaded) ledger of ``dataset_key`` on the server at ``url``."""
        root = Path(ledger_dir).expanduser() if ledger_dir is not None else default_ledger_dir()
        return cls(path=root / url_hash(url) / f"{dataset_key}.json", url=url, dataset_key=dataset_key)

    @contextlib.contextmanager
    def locked(self) -> Iterator[SampleLedger]:
        """Hold an exclusive lock on this dataset's ledger (waits for another process to finish)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+b") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield self
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def load(self) -> SampleLedger:
        """Read the file if it exists. A corrupt file is an error, never silently reset (that would
        register every sample again)."""
        if not self.path.exists():
            self.samples, self.pending = {}, None
            return self
        try:
            body = json.loads(self.path.read_text(encoding="utf-8"))
            if body.get("format") != _FORMAT or body.get("version") != _VERSION:
                raise ValueError(f"not a version-{_VERSION} sample ledger")
            if body.get("dataset_key") != self.dataset_key:
                raise ValueError(f"it describes dataset {body.get('dataset_key')!r}")
            samples = body["samples"]
            if not isinstance(samples, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in samples.items()
            ):
                raise ValueError("'samples' is not a mapping of strings")
            pending = body.get("pending")
            self.samples = dict(samples)
            self.pending = (
                PendingBatch(
                    hashes=list(pending["hashes"]),
                    foreign=list(pending.get("foreign", [])),
                    started_at=str(pending.get("started_at", "")),
                )
                if pending
                else None
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise LedgerError(
                f"sample ledger {self.path} of dataset {self.dataset_key} is unreadable ({error}); "
                "fix or move it away (without it, samples already registered would be registered again)",
                key=self.dataset_key,
            ) from None
        return self

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "url": self.url,
            "dataset_key": self.dataset_key,
            "updated_at": _now(),
            "samples": dict(sorted(self.samples.items())),
            "pending": None
            if self.pending is None
            else {
                "hashes": self.pending.hashes,
                "foreign": self.pending.foreign,
                "started_at": self.pending.started_at,
            },
        }

    def save(self) -> None:
        """Write atomically: a crash leaves either the old or the new file, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(self.to_json(), handle, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        with contextlib.suppress(OSError):  # persist the rename itself (best effort, POSIX)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def record(self, hashes: Sequence[str], keys: Sequence[str]) -> None:
        """Remember that the contents ``hashes`` were registered as ``keys`` (paired by position)."""
        if len(hashes) != len(keys):
            raise ValueError(f"{len(hashes)} fingerprints but {len(keys)} keys")
        self.samples.update(zip(hashes, keys, strict=True))

    def forget_missing(self, keys_on_server: set[str]) -> dict[str, str]:
        """Drop entries whose key is no longer in the dataset; return them."""
        gone = {h: k for h, k in self.samples.items() if k not in keys_on_server}
        for h in gone:
            del self.samples[h]
        return gone
