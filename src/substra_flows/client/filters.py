"""Filters and ordering the list routes accept (substra-rest-api.md 4.2-4.3), checked before any request."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from substra_flows import exceptions as exc
from substra_flows import models

_LIST, _SINGLE, _NAME, _METADATA, _STATUS = "list", "single", "name", "metadata", "status"

ALLOWED_FILTERS: dict[str, dict[str, str]] = {
    "data_manager": {"key": _LIST, "name": _NAME, "owner": _LIST, "data_sample_key": _LIST},
    "data_sample": {"key": _LIST, "owner": _LIST, "dataset_key": _SINGLE},
    "function": {"key": _LIST, "name": _NAME, "owner": _LIST, "compute_plan_key": _LIST},
    "compute_plan": {
        "key": _LIST,
        "name": _NAME,
        "owner": _LIST,
        "tag": _LIST,
        "status": _STATUS,
        "function_key": _SINGLE,
        "creator": _LIST,
        "metadata": _METADATA,
    },
    "task": {
        "key": _LIST,
        "owner": _LIST,
        "worker": _LIST,
        "rank": _LIST,
        "tag": _LIST,
        "status": _STATUS,
        "compute_plan_key": _LIST,
        "function_key": _SINGLE,
        "metadata": _METADATA,
    },
    "model": {"key": _LIST, "owner": _LIST, "compute_task_key": _LIST},
}

#: filters the SDK offers but the 1.0 server silently ignores (the list would come back unfiltered)
IGNORED_BY_SERVER: dict[str, set[str]] = {
    "data_manager": {"permissions", "compute_plan_key", "function_key"},
    "data_sample": {"compute_plan_key", "function_key"},
    "function": {"permissions", "dataset_key", "data_sample_key"},
    "compute_plan": {"worker", "dataset_key", "data_sample_key"},
    "task": set(),
    "model": {"permissions"},
}

ALLOWED_ORDERING: dict[str, set[str]] = {
    "data_manager": {"creation_date", "key", "name", "owner"},
    "data_sample": {"creation_date", "key", "owner"},
    "function": {"creation_date", "key", "name", "owner"},
    "compute_plan": {
        "creation_date",
        "start_date",
        "end_date",
        "key",
        "owner",
        "status",
        "tag",
        "name",
        "duration",
        "creator",
    },
    "task": {
        "creation_date",
        "start_date",
        "end_date",
        "key",
        "owner",
        "rank",
        "status",
        "function__name",
        "tag",
        "compute_plan_key",
        "duration",
    },
    "model": {"creation_date", "key"},
}

_STATUS_VALUES: dict[str, set[str]] = {
    "compute_plan": {s.value for s in models.ComputePlanStatus},
    "task": {s.value for s in models.ComputeTaskStatus},
}


def format_filters(route: str, filters: Mapping[str, Any] | None) -> dict[str, str]:
    """Check ``filters`` against what ``route`` supports and encode them as query parameters.

    Lists become comma-joined values; ``name`` becomes ``match``; ``metadata`` becomes compact
    JSON. Filters the server would silently ignore are refused rather than returning an
    unfiltered list.
    """
    if not filters:
        return {}
    if not isinstance(filters, Mapping):
        raise exc.FilterFormatError.for_field("filters", filters, "must be a dict")
    allowed = ALLOWED_FILTERS[route]
    params: dict[str, str] = {}
    for name, value in filters.items():
        kind = allowed.get(name)
        if kind is None:
            if name in IGNORED_BY_SERVER.get(route, set()):
                why = "the server ignores it and would return an unfiltered list"
            else:
                why = f"not a filter of {route}; allowed: {sorted(allowed)}"
            raise exc.NotAllowedFilterError.for_field(f"filters.{name}", value, why)
        if kind == _NAME:
            if not isinstance(value, str):
                raise exc.FilterFormatError.for_field(f"filters.{name}", value, "must be a string")
            params["match"] = value
        elif kind == _METADATA:
            params["metadata"] = _format_metadata_filter(value)
        else:
            values = [value] if isinstance(value, (str, int)) else value
            if not isinstance(values, (list, tuple, set)) or not values:
                raise exc.FilterFormatError.for_field(f"filters.{name}", value, "must be a non-empty list")
            texts = [str(v).replace(" ", "") for v in values]
            if any("," in t or not t for t in texts):
                raise exc.FilterFormatError.for_field(
                    f"filters.{name}", value, "values must be non-empty and contain no comma"
                )
            if kind == _SINGLE and len(texts) > 1:
                raise exc.FilterFormatError.for_field(
                    f"filters.{name}", value, "the server accepts a single value for this filter"
                )
            if kind == _STATUS:
                bad = [t for t in texts if t not in _STATUS_VALUES[route]]
                if bad:
                    raise exc.FilterFormatError.for_field(
                        f"filters.{name}", value, f"unknown status {bad}; use {sorted(_STATUS_VALUES[route])}"
                    )
            params[name] = ",".join(texts)
    return params


def _format_metadata_filter(value: Any) -> str:
    """Validate ``[{"key", "type": is|contains|exists, "value"}]`` and encode it as compact JSON."""
    if not isinstance(value, list) or not value:
        raise exc.FilterFormatError.for_field("filters.metadata", value, "must be a non-empty list of dicts")
    for i, item in enumerate(value):
        where = f"filters.metadata.{i}"
        if not isinstance(item, Mapping) or "key" not in item or "type" not in item:
            raise exc.FilterFormatError.for_field(where, item, "must be a dict with 'key' and 'type'")
        if item["type"] not in ("is", "contains", "exists"):
            raise exc.FilterFormatError.for_field(f"{where}.type", item["type"], "must be is, contains or exists")
        if item["type"] != "exists" and not isinstance(item.get("value"), str):
            raise exc.FilterFormatError.for_field(
                f"{where}.value", item.get("value"), "a string is required for 'is' and 'contains'"
            )
    return json.dumps([dict(item) for item in value], separators=(",", ":"))


def format_ordering(route: str, order_by: str | None, ascending: bool) -> dict[str, str]:
    """``ordering`` query parameter, refusing fields the route cannot sort on."""
    if order_by is None:
        return {}
    if order_by not in ALLOWED_ORDERING[route]:
        raise exc.OrderingFormatError.for_field(
            "order_by", order_by, f"{route} can be ordered by {sorted(ALLOWED_ORDERING[route])}"
        )
    return {"ordering": order_by if ascending else f"-{order_by}"}

