"""Pipeline steps shared by the Airflow and Prefect faces.

Every step takes a ``SubstraClient`` first, returns plain JSON-serialisable data (dataclasses
with ``to_dict()``, or lists of dicts), checks its arguments before the first request (bad input
raises :class:`~substra_flows.exceptions.SpecValidationError`, a ``ValueError``, naming the field
and the value), and is idempotent for a given run: rerunning it finds what a previous attempt
created instead of creating it twice.

Guarantees, step by step
------------------------
- :func:`derive_key` — uuid5 of the JSON list of the parts under a fixed project namespace:
  same parts, same key, on every machine and forever.
- :func:`submit_compute_plan` — a run (named by the spec's key, else ``derive_key(*run_identity)``,
  else an error) owns attempts 1, 2, ... (:mod:`~substra_flows.steps.attempts`): the latest one is
  reused while it runs or once DONE, and a FAILED or CANCELED one is followed by the next attempt
  (``on_failed="retry"``, the default) or reported as an error naming the plan and its failed task
  (``on_failed="fail"``). Attempt 1's key is the run key; the metadata records the run key and the
  attempt number. Task names (``task_id`` values that are not UUIDs) become ``uuid5(plan key,
  name)``, parent references rewritten. Rerunning creates no second plan (an existing attempt is
  found) and no duplicated task (tasks already in the plan are listed and skipped; only the rest are
  sent, in batches). UUID ``task_id`` values are used as given in attempt 1 (they must be stable
  across reruns) and re-keyed under the plan key in later attempts.
- :func:`register_dataset` / :func:`register_function` — recognised by a fingerprint stored in
  their metadata (``substra_flows_fingerprint``): name + sha256 of the opener / archive (a folder
  is tar-gzipped reproducibly first) + permissions (+ inputs/outputs for functions), looked up
  among the assets of the caller's organization. A creation whose answer is lost is looked up
  again before being resent once.
- Data samples (:func:`register_dataset`, :func:`add_data_samples`) — recognised by a content
  hash (sha256 over sorted relative paths + bytes) recorded in a ledger file per dataset
  (``<ledger_dir>/<url-hash>/<dataset_key>.json``; default dir ``~/.cache/substra-flows/ledgers``
  or ``$SUBSTRA_FLOWS_LEDGER_DIR``), written atomically after each batch. Each batch is written
  as *pending* before it is sent. A pending batch — a lost answer now, or a crash found by the
  next run — is resolved from the dataset's sample list: if exactly as many keys as the batch
  holds appeared that neither the ledger nor the pre-batch snapshot know, the batch was applied
  and they are recorded; if none appeared (after a few looks while it is recent), it was not, and
  it is sent (again); any other count raises :class:`ReconciliationError` without resending.
  Under these conditions no sample content is registered twice in a dataset: the ledger file
  survives between attempts, nobody else adds samples to the dataset while a batch is in doubt,
  and the server applies a batch all-or-nothing (substra-backend does). Within a batch, keys are
  paired with folders in the order the server returns them (request order on substra-backend and
  the local node); the set of keys is exact either way. Without its ledger (deleted, other
  machine), a rerun cannot recognise earlier samples and registers them again.
- Waits — the client's single wait implementation; a failure names the failed task(s) and
  carries the tail of their logs (completed here when the client could not get them).
- :func:`cancel_compute_plan` — no request for a final plan; a failure on a plan that turns out
  final is not an error. Returns whether this call cancelled it.
- :func:`download_model` — read-only; exactly one of ``model_key`` / ``task_key`` (checked before
  any request); a channel with model export off raises ``ModelExportDisabled`` naming the setting.
- :func:`leaderboard` / :func:`quality_gate` — read-only / pure; the leaderboard ranks the latest
  DONE attempt of each run and never a failed or canceled one. :func:`fetch_performances` reads a
  run's latest DONE attempt with ``latest_attempt=True``.
"""

from .assets import (
    ReconciliationError,
    RegisteredDataset,
    RegisteredFunction,
    add_data_samples,
    register_dataset,
    register_function,
    sync_samples,
)
from .attempts import (
    ATTEMPT_METADATA,
    ON_FAILED,
    RUN_METADATA,
    Attempt,
    attempt_key,
    attempt_of,
    choose_attempt,
    latest_attempt,
    latest_done_attempt,
)
from .downloads import download_model
from .fingerprints import FINGERPRINT_KEY, asset_fingerprint, deterministic_targz, file_sha256, sample_fingerprint
from .keys import PROJECT_NAMESPACE, derive_key, derive_task_key
from .leaderboard import (
    AGGREGATES,
    GateDecision,
    LeaderboardEntry,
    aggregate_performances,
    latest_attempts,
    leaderboard,
    quality_gate,
    rank_entries,
)
from .ledger import LedgerError, SampleLedger, default_ledger_dir
from .plans import (
    SubmittedPlan,
    async_wait_compute_plan,
    async_wait_task,
    cancel_compute_plan,
    cancel_latest_attempt,
    complete_failure,
    fetch_performances,
    given_compute_plan_key,
    prepare_compute_plan,
    resolve_compute_plan_key,
    submit_compute_plan,
    wait_compute_plan,
    wait_task,
)

__all__ = [
    "AGGREGATES",
    "ATTEMPT_METADATA",
    "FINGERPRINT_KEY",
    "ON_FAILED",
    "PROJECT_NAMESPACE",
    "RUN_METADATA",
    "Attempt",
    "GateDecision",
    "LeaderboardEntry",
    "LedgerError",
    "ReconciliationError",
    "RegisteredDataset",
    "RegisteredFunction",
    "SampleLedger",
    "SubmittedPlan",
    "add_data_samples",
    "aggregate_performances",
    "asset_fingerprint",
    "async_wait_compute_plan",
    "async_wait_task",
    "attempt_key",
    "attempt_of",
    "cancel_compute_plan",
    "cancel_latest_attempt",
    "choose_attempt",
    "complete_failure",
    "default_ledger_dir",
    "derive_key",
    "derive_task_key",
    "deterministic_targz",
    "download_model",
    "fetch_performances",
    "file_sha256",
    "given_compute_plan_key",
    "latest_attempt",
    "latest_attempts",
    "latest_done_attempt",
    "leaderboard",
    "prepare_compute_plan",
    "quality_gate",
    "rank_entries",
    "register_dataset",
    "register_function",
    "resolve_compute_plan_key",
    "sample_fingerprint",
    "submit_compute_plan",
    "sync_samples",
    "wait_compute_plan",
    "wait_task",
]
