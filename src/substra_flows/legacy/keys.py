"""Deterministic 1.0 keys for what 0.x identified by content (tuples, plans, records).

0.x tuple keys were hashes of what defined the tuple (the creator, the algo, the data, the input
models), which is what made ``AlreadyExists`` possible. 1.0 task and plan keys are chosen by the
client, so the legacy client derives them the same way: uuid5 of the canonical JSON of those
parts, under a fixed namespace. Same 0.x spec, same key, on every machine and every run.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

NAMESPACE = uuid.UUID("a0b461f7-44f9-43f5-b0a9-f540cc24b03f")


def derive_key(*parts: Any) -> str:
    """uuid5 of the compact JSON of ``parts`` (lists keep their order; dicts are sorted)."""
    text = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(uuid.uuid5(NAMESPACE, text))


def plan_tuple_key(compute_plan_key: str, tuple_id: str) -> str:
    """Key of the tuple a compute plan spec names ``tuple_id`` (ids share one namespace per plan)."""
    return str(uuid.uuid5(uuid.UUID(compute_plan_key), f"legacy-tuple/{tuple_id}"))


def predict_key(testtuple_key: str) -> str:
    """Key of the predict task that feeds a testtuple's test task."""
    return str(uuid.uuid5(uuid.UUID(testtuple_key), "predict"))


def standalone_plan_key(tuple_key: str) -> str:
    """The plan holding a tuple added outside of any 0.x compute plan (1.0 has no task without one)."""
    return derive_key("standalone-plan", tuple_key)


def new_plan_key(tuple_key: str) -> str:
    """The plan a rank-0 tuple without ``compute_plan_id`` starts (0.x started one with that tuple)."""
    return derive_key("plan-started-by", tuple_key)
