"""Server answers parsed straight from their bytes: pydantic-core reads the JSON and builds the
models in one pass, with no intermediate dicts and no per-item Python loop.

A body that does not validate is decoded again the plain way, so that its error says exactly what
is wrong (not JSON, not a page, which field of which item): the fast path is only for good bodies.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, Optional, TypeVar

import pydantic

from substra_flows import exceptions as exc
from substra_flows.transport import RawBody

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)
ItemT = TypeVar("ItemT")


class _Page(pydantic.BaseModel, Generic[ItemT]):
    """One page of a paginated list route (``count`` and ``previous`` are not needed)."""

    model_config = pydantic.ConfigDict(extra="ignore")

    next: Optional[str] = None
    results: list[ItemT]


_ADAPTERS: dict[tuple[str, Any], pydantic.TypeAdapter[Any]] = {}
_ADAPTERS_LOCK = threading.Lock()


def _adapter(shape: str, model: Any) -> pydantic.TypeAdapter[Any]:
    """The cached TypeAdapter of ``_Page[model]`` or ``list[model]`` (built once per model)."""
    found = _ADAPTERS.get((shape, model))
    if found is None:
        with _ADAPTERS_LOCK:
            found = _ADAPTERS.get((shape, model))
            if found is None:
                target = _Page[model] if shape == "page" else list[model]
                found = pydantic.TypeAdapter(target)
                _ADAPTERS[(shape, model)] = found
    return found


_GC_LOCK = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a page is parsed.

    Building thousands of models allocates enough objects to trigger collection after collection,
    each walking every model built so far: on 10,000 tasks that is 4/5 of the parse time. Parsing
    makes no reference cycles (memory is still freed by reference counting), so nothing is lost.
    Counted, so that overlapping parses in several threads re-enable it once, and only if it was on.
    """
    global _gc_pausers, _gc_was_enabled
    with _GC_LOCK:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def page_parser(model: type[ModelT], where: str) -> Callable[[RawBody], tuple[list[ModelT], Optional[str]]]:
    """Parser of one page of ``model`` items, giving ``(items, next link)``. A route that answers a
    plain JSON list (not paginated) is read as a single page."""

    def parse(body: RawBody) -> tuple[list[ModelT], Optional[str]]:
        try:
            with _cyclic_gc_paused():
                if body.content.lstrip()[:1] == b"[":
                    return _adapter("list", model).validate_json(body.content), None
                page = _adapter("page", model).validate_json(body.content)
            return page.results, page.next
        except pydantic.ValidationError:
            pass
        data = body.json()  # raises the transport's own error for a body that is not JSON
        if isinstance(data, list):
            return [parse_model(model, item, where) for item in data], None
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise exc.InvalidResponse(
                f"{body.where}: expected a page with 'results', got {type(data).__name__}",
                method="GET",
                url=body.where.split(" ", 1)[-1],
            )
        link = data.get("next")
        return [parse_model(model, item, where) for item in data["results"]], link if isinstance(link, str) else None

    return parse


def one_parser(model: type[ModelT], where: str) -> Callable[[RawBody], ModelT]:
    """Parser of a single ``model`` object."""

    def parse(body: RawBody) -> ModelT:
        try:
            return model.model_validate_json(body.content)
        except pydantic.ValidationError:
            return parse_model(model, body.json(), where)

    return parse


def parse_model(model: type[ModelT], body: Any, where: str) -> ModelT:
    """Validate a decoded server object, turning a mismatch into InvalidResponse."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in error.errors(include_url=False)[:5]
        )
        raise exc.InvalidResponse(f"{where}: unexpected {model.__name__} shape: {problems}") from None
