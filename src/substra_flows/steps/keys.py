"""Deterministic keys: the same run identity always names the same compute plan and tasks.

Plan and task keys are chosen by the client (substra-rest-api.md section 7), so a step rerun
for the same pipeline run can find, rather than duplicate, what a first attempt created.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

from substra_flows.exceptions import KeyFormatError, SpecValidationError
from substra_flows.schemas import check_key

__all__ = ["PROJECT_NAMESPACE", "as_uuid", "check_run_identity", "derive_key", "derive_task_key"]

#: Namespace of every key derive_key() makes. Fixed forever: changing it would give reruns new keys.
PROJECT_NAMESPACE = uuid.UUID("5b0d6f0e-9c1e-5d7a-8f3b-2a61c4e8d9f7")


def derive_key(*parts: str) -> str:
    """A UUID (string) derived deterministically from a run identity, e.g. (dag_id, run_id, task_id).

    The parts are joined as a JSON list, so ("a/b", "c") and ("a", "b/c") give different keys.
    Raises SpecValidationError for no part or a part that is not a non-empty string.
    """
    check_run_identity(parts, "parts")
    name = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":"))
    return str(uuid.uuid5(PROJECT_NAMESPACE, name))


def check_run_identity(parts: Sequence[str], field: str = "run_identity") -> tuple[str, ...]:
    """Validate a run identity: a non-empty sequence of non-empty strings (a bare string is refused,
    since splatting it would silently use its characters)."""
    if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence):
        raise SpecValidationError.for_field(
            field, parts, "must be a sequence of strings, e.g. (dag_id, run_id, task_id)"
        )
    if not parts:
        raise SpecValidationError.for_field(field, parts, "give at least one part, e.g. (dag_id, run_id, task_id)")
    for i, part in enumerate(parts):
        if not isinstance(part, str) or not part:
            raise SpecValidationError.for_field(f"{field}.{i}", part, "must be a non-empty string")
    return tuple(parts)


def derive_task_key(compute_plan_key: str, task_id: str) -> str:
    """Key of a task named ``task_id`` (not a UUID) in a plan: uuid5 under the plan key.

    Same formula as ``examples.assets.task_key``: a plan built from task names gets the same keys
    whether the names are turned into keys before or by :func:`submit_compute_plan`.
    """
    return str(uuid.uuid5(uuid.UUID(check_key(compute_plan_key, "compute_plan_key")), task_id))


def as_uuid(value: object) -> str | None:
    """The canonical form of ``value`` if it is a UUID, else None."""
    try:
        return check_key(value)
    except KeyFormatError:
        return None
