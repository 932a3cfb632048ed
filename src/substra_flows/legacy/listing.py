"""0.x list filters: ``["<asset_type>:<field>:<value>", "OR", ...]``, applied to the 0.x views.

A filter names an asset type and one of its fields: the listed asset's own type for its own fields
(``traintuple:tag:round-1``), or a sub-record of it (``algo:name:my algo`` on a traintuple,
``objective:hash:<key>`` on a testtuple, ``dataset:worker:MyOrg1MSP``). Terms are ANDed; ``OR``
starts another group. A value matches a field equal to it, or a list field containing it. Booleans
match ``true`` / ``false``. An unknown asset type or field raises ``InvalidRequest`` naming it (an
unknown filter must never come back as an unfiltered list).

``is_complex`` (0.x): when true the answer keeps one list per OR group, as 0.x servers answered
complex queries; otherwise the groups are merged, without duplicates, in listing order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from substra_flows.legacy.exceptions import invalid_request

OR = "OR"


@dataclass(frozen=True)
class Term:
    """One ``asset_type:field:value`` condition."""

    asset_type: str
    field: str
    value: str


def parse(
    filters: Union[Sequence[str], None], asset_type: str, fields: Mapping[str, Iterable[str]]
) -> list[list[Term]]:
    """Check the filters against the listed asset's fields; return the OR groups of AND terms.

    ``fields`` maps the listed type and each sub-record name to the field names it has.
    """
    if filters is None:
        return []
    if isinstance(filters, str) or not isinstance(filters, Sequence):
        raise invalid_request(f"filters={filters!r}: expected a list of '<asset_type>:<field>:<value>' strings")
    groups: list[list[Term]] = [[]]
    for position, item in enumerate(filters):
        if item == OR:
            groups.append([])
            continue
        parts = item.split(":", 2) if isinstance(item, str) else []
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise invalid_request(f"filters[{position}]={item!r}: expected 'OR' or '<asset_type>:<field>:<value>'")
        kind, name, value = parts
        known = fields.get(kind)
        if known is None:
            raise invalid_request(
                f"filters[{position}]={item!r}: a {asset_type} cannot be filtered on {kind!r}; "
                f"asset types: {sorted(fields)}"
            )
        if name not in known:
            raise invalid_request(
                f"filters[{position}]={item!r}: {kind} has no field {name!r}; fields: {sorted(known)}"
            )
        groups[-1].append(Term(kind, name, value))
    empty = [i for i, group in enumerate(groups) if not group]
    if empty and len(groups) > 1:
        raise invalid_request(f"filters={list(filters)!r}: 'OR' must separate two non-empty groups of filters")
    return [g for g in groups if g]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _matches(view: Mapping[str, Any], asset_type: str, term: Term) -> bool:
    record = view if term.asset_type == asset_type else view.get(term.asset_type)
    if not isinstance(record, Mapping):
        return False
    value = record.get(term.field)
    if isinstance(value, list):
        return term.value in (_text(v) for v in value)
    return _text(value) == term.value


def apply(
    views: Sequence[Mapping[str, Any]], asset_type: str, groups: list[list[Term]], is_complex: bool
) -> Union[list[Any], list[list[Any]]]:
    """The views each group selects: one list per group when ``is_complex``, else merged."""
    if not groups:
        return [list(views)] if is_complex else list(views)
    selected = [[v for v in views if all(_matches(v, asset_type, t) for t in group)] for group in groups]
    if is_complex:
        return selected
    chosen = {id(v) for group in selected for v in group}
    return [v for v in views if id(v) in chosen]
