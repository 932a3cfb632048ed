"""Request size limit of ``bulk_create``: the orchestrator's gRPC message cap.

The backend forwards a batch of tasks to the orchestrator as one gRPC message, and gRPC refuses a
message over 4 MiB (neither the orchestrator nor the backend raises the default); the backend
answers that refusal with 413. The node estimates the protobuf size of the batch (each string as
tag + length + bytes) rather than measuring the JSON body, which is about twice as large.
"""

from __future__ import annotations

from typing import Any

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's default max receive message size


def _string(value: Any) -> int:
    if value is None or value == "":
        return 0
    data = str(value).encode()
    return 1 + _varint(len(data)) + len(data)


def _varint(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _message(size: int) -> int:
    return 1 + _varint(size) + size if size else 0


def _permissions(perm: Any) -> int:
    if not isinstance(perm, dict):
        return 0
    ids = sum(_string(i) for i in perm.get("authorized_ids") or [])
    return _message(2 + ids)


def task_size(spec: dict[str, Any]) -> int:
    """Estimated bytes of one ``NewComputeTask`` message."""
    size = sum(_string(spec.get(k)) for k in ("key", "function_key", "compute_plan_key", "worker", "tag"))
    size += 2 if spec.get("rank") is not None else 0
    for key, value in (spec.get("metadata") or {}).items():
        size += _message(_string(key) + _string(value))
    for ref in spec.get("inputs") or []:
        ref = ref if isinstance(ref, dict) else {}
        inner = _string(ref.get("identifier")) + _string(ref.get("asset_key"))
        inner += _message(_string(ref.get("parent_task_key")) + _string(ref.get("parent_task_output_identifier")))
        size += _message(inner)
    outputs = spec.get("outputs") or {}
    for identifier, out in outputs.items() if isinstance(outputs, dict) else []:
        out = out if isinstance(out, dict) else {}
        size += _message(_string(identifier) + _message(_permissions(out.get("permissions")) + 2))
    return _message(size)


def message_too_large(specs: list[dict[str, Any]], limit: int | None) -> str | None:
    """gRPC's refusal text when the batch is over ``limit`` bytes, else None."""
    if limit is None:
        return None
    size = sum(task_size(s) for s in specs if isinstance(s, dict))
    if size <= limit:
        return None
    return f"grpc: received message larger than max ({size} vs. {limit})"
