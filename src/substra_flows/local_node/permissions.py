"""Permissions as orchestrator 1.0 stores and checks them.

- Stored permissions always list their owner, even when public (``orch: permission.go``).
- Registering a task: the task's *owner* (the requesting organization) must be allowed to process
  the function and the dataset; the *worker* must be allowed to process every parent output and
  model it reads. Refusals are 403 ``OE0102``.
- A task output's permissions get the task owner appended; a task without a dataset gets as
  ``logs_permission`` its owner plus its parents' ``logs_permission``.
"""

from __future__ import annotations

from typing import Any

PERMISSION_DENIED = "OE0102"
INVALID = "OE0101"
NOT_FOUND = "OE0002"


class PermissionRefused(Exception):
    """A registration the orchestrator refuses (403 ``OE0102``)."""


def stored(raw: Any, owner: str, known: list[str], field: str) -> dict[str, Any]:
    """Request shape ``{public, authorized_ids}`` -> stored permission, the owner always listed.

    Raises ValueError with the server's message for a malformed or unknown value.
    """
    if raw is None:
        raw = {"public": False, "authorized_ids": []}
    if not isinstance(raw, dict) or not isinstance(raw.get("public", False), bool):
        raise ValueError(f"{field}: Invalid permissions: expected {{public: bool, authorized_ids: [..]}}.")
    ids = raw.get("authorized_ids") or []
    if not isinstance(ids, list):
        raise ValueError(f"{field}: authorized_ids must be a list.")
    public = bool(raw.get("public", False))
    if not public:
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"invalid permission input values: unknown organizations {unknown}")
    return {"public": public, "authorized_ids": list(dict.fromkeys([*ids, owner]))}


def both(perm: dict[str, Any]) -> dict[str, Any]:
    """The same permission for ``process`` and ``download`` (what the API registers)."""
    return {"process": dict(perm), "download": dict(perm)}


def allowed(perm: dict[str, Any], org_id: str) -> bool:
    """Whether ``org_id`` is granted ``perm``."""
    return bool(perm.get("public")) or org_id in perm.get("authorized_ids", [])


def union(perms: list[dict[str, Any]], owner: str) -> dict[str, Any]:
    """``MergePermissions``: public if any is, else every authorized id, the owner first."""
    ids: list[str] = [owner]
    for perm in perms:
        ids.extend(perm.get("authorized_ids", []))
    return {"public": any(p.get("public") for p in perms), "authorized_ids": list(dict.fromkeys(ids))}


def check_task_registration(
    task_key: str,
    owner: str,
    worker: str,
    function: dict[str, Any],
    dataset: dict[str, Any] | None,
) -> None:
    """The owner's checks of ``orch: computetask.go`` (function and dataset)."""
    if not allowed(function["permissions"]["process"], owner):
        raise PermissionRefused(
            f"{PERMISSION_DENIED}: not authorized to process function {function['key']} "
            f"(task {task_key}, owner {owner})"
        )
    if dataset is not None and not allowed(dataset["permissions"]["process"], owner):
        raise PermissionRefused(
            f"{PERMISSION_DENIED}: not authorized to process datamanager {dataset['key']} "
            f"(task {task_key}, owner {owner})"
        )


def check_worker_reads(task_key: str, worker: str, label: str, perm: dict[str, Any]) -> None:
    """The worker must be allowed to process a parent output or a model it reads."""
    if not allowed(perm, worker):
        raise PermissionRefused(f"{PERMISSION_DENIED}: worker {worker} doesn't have permission to process {label}")
