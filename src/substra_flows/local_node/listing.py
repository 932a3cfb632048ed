"""Filters, ordering and page-number pagination, as substra-backend 1.0 applies them to list routes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .store import parse_time

Record = dict[str, Any]
Predicate = Callable[[Record, str], bool]

MAX_PAGE_SIZE = 10000


class InvalidPage(Exception):
    """A page number past the end (the server answers 404 ``Invalid page.``)."""


class InvalidFilter(Exception):
    """A filter value the server validates and rejects (400 with a field error)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def split_values(raw: str) -> list[str]:
    """A comma-separated IN list."""
    return [v for v in raw.split(",") if v != ""]


def in_list(getter: Callable[[Record], Any]) -> Predicate:
    """Exact match of a field against a comma-separated list."""

    def check(record: Record, raw: str) -> bool:
        value = getter(record)
        return value is not None and str(value) in split_values(raw)

    return check


def contains_any(getter: Callable[[Record], Iterable[str]]) -> Predicate:
    """A list field that shares at least one value with the comma-separated list."""

    def check(record: Record, raw: str) -> bool:
        wanted = set(split_values(raw))
        return any(value in wanted for value in getter(record))

    return check


def equals(getter: Callable[[Record], Any]) -> Predicate:
    """Single-value exact match (filters the server does not split on commas)."""
    return lambda record, raw: str(getter(record)) == raw


def match_text(fields: tuple[str, ...]) -> Predicate:
    """``match``: every space- or comma-separated part is a case-insensitive substring of one field."""

    def check(record: Record, raw: str) -> bool:
        parts = [p.lower() for p in raw.replace(",", " ").split() if p]
        haystacks = [str(record.get(f) or "").lower() for f in fields]
        return all(any(part in text for text in haystacks) for part in parts)

    return check


def permission_allows(getter: Callable[[Record], dict[str, Any]]) -> Predicate:
    """``can_process`` / ``can_access_logs``: every listed org is allowed."""

    def check(record: Record, raw: str) -> bool:
        perm = getter(record)
        if perm.get("public"):
            return True
        return all(org in perm.get("authorized_ids", []) for org in split_values(raw))

    return check


def date_bound(field: str, after: bool) -> Predicate:
    """``<field>_after`` / ``<field>_before`` on an ISO timestamp field (inclusive)."""

    def check(record: Record, raw: str) -> bool:
        value = record.get(field)
        if not value:
            return False
        try:
            bound = parse_time(raw)
        except ValueError:
            return True  # the server ignores an unparsable bound
        moment = parse_time(value)
        return moment >= bound if after else moment <= bound

    return check


def number_bound(field: str, minimum: bool) -> Predicate:
    """``duration_min`` / ``duration_max``."""

    def check(record: Record, raw: str) -> bool:
        try:
            bound = float(raw)
        except ValueError:
            return True
        value = record.get(field) or 0
        return value >= bound if minimum else value <= bound

    return check


def metadata_filter(record: Record, raw: str) -> bool:
    """``metadata=[{"key", "type": is|contains|exists, "value"}]``, all conditions must hold."""
    try:
        conditions = json.loads(raw)
        if not isinstance(conditions, list):
            return True
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON in the query string
        return True  # a malformed metadata filter is ignored
    metadata = record.get("metadata") or {}
    for cond in conditions:
        if not isinstance(cond, dict) or "key" not in cond:
            continue
        key, kind = cond["key"], cond.get("type")
        if kind == "exists":
            ok = key in metadata
        elif key not in metadata:
            ok = False
        elif kind == "is":
            ok = str(metadata[key]) == str(cond.get("value"))
        elif kind == "contains":
            ok = str(cond.get("value", "")).lower() in str(metadata[key]).lower()
        else:
            ok = True
        if not ok:
            return False
    return True


def date_filters(*fields: str) -> dict[str, Predicate]:
    """The ``_after`` / ``_before`` pair for each date field."""
    out: dict[str, Predicate] = {}
    for f in fields:
        out[f"{f}_after"] = date_bound(f, after=True)
        out[f"{f}_before"] = date_bound(f, after=False)
    return out


def apply_filters(records: Iterable[Record], params: dict[str, str], filters: dict[str, Predicate]) -> list[Record]:
    """Keep records matching every known filter; unknown parameters are silently ignored."""
    active = [(filters[name], raw) for name, raw in params.items() if name in filters]
    return [r for r in records if all(check(r, raw) for check, raw in active)]


def _sort_key(field: str) -> Callable[[Record], Any]:
    if field.startswith("metadata__"):
        meta_key = field[len("metadata__") :]
        return lambda r: _none_last((r.get("metadata") or {}).get(meta_key))
    if "__" in field:
        outer, inner = field.split("__", 1)
        return lambda r: _none_last((r.get(outer) or {}).get(inner))
    return lambda r: _none_last(r.get(field))


def _none_last(value: Any) -> tuple[bool, Any]:
    return (value is None, "" if value is None else value)


def order(records: list[Record], raw: str | None, allowed: tuple[str, ...]) -> list[Record]:
    """Default order creation_date then key; ``ordering`` fields outside ``allowed`` are dropped."""
    records = sorted(records, key=lambda r: (r.get("creation_date") or "", r.get("key") or ""))
    if not raw:
        return records
    fields = [f.strip() for f in raw.split(",") if f.strip()]
    valid = [
        f
        for f in fields
        if f.lstrip("-") in allowed or ("metadata__<k>" in allowed and f.lstrip("-").startswith("metadata__"))
    ]
    for field in reversed(valid):  # stable sorts applied last-key-first
        descending = field.startswith("-")
        records.sort(key=_sort_key(field.lstrip("-")), reverse=descending)
    return records


def paginate(records: list[Record], params: dict[str, str], url: str, default_size: int) -> dict[str, Any]:
    """``{count, next, previous, results}`` with absolute links, as DRF's page-number pagination."""
    try:
        size = int(params.get("page_size", default_size))
    except ValueError:
        size = default_size
    size = default_size if size <= 0 else min(size, MAX_PAGE_SIZE)
    try:
        page = int(params.get("page", "1"))
    except ValueError as exc:
        raise InvalidPage() from exc
    count = len(records)
    pages = max(1, -(-count // size))
    if page < 1 or page > pages:
        raise InvalidPage()
    start = (page - 1) * size
    return {
        "count": count,
        "next": _with_page(url, page + 1) if page < pages else None,
        "previous": (_with_page(url, page - 1) if page > 2 else _with_page(url, None)) if page > 1 else None,
        "results": records[start : start + size],
    }


def _with_page(url: str, page: int | None) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "page"]
    if page is not None:
        query.append(("page", str(page)))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))
