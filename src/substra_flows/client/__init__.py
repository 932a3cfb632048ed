"""SubstraClient: the official SDK 1.0 client surface over a hardened transport.

Method names, argument names and spec dicts are the SDK's (``add_dataset``,
``add_compute_plan``, ``wait_task``, ``get_performances``...). What differs is underneath:
timeouts on every call, retries only where safe, idempotent plan/task creation with
client-chosen keys, one wait implementation for sync and async callers, and errors that name
the asset and carry the server's message.

The implementation is split by resource (``datasets``, ``functions``, ``plans``, ``waits``,
``results``, ``downloads``, ``filters``, on the shared ``_core``); this module assembles the one
flat class and keeps every name that ``substra_flows.client`` offered.
"""

from __future__ import annotations

from substra_flows import exceptions as exc
from substra_flows import models, schemas, waiting
from substra_flows.client._core import ClientCore, ModelT, _key_of, _parse, logger
from substra_flows.client.datasets import GENERATED_DESCRIPTION, DatasetMethods, _unique_part_name, zip_folder
from substra_flows.client.downloads import DownloadMethods
from substra_flows.client.filters import (
    _LIST,
    _METADATA,
    _NAME,
    _SINGLE,
    _STATUS,
    _STATUS_VALUES,
    ALLOWED_FILTERS,
    ALLOWED_ORDERING,
    IGNORED_BY_SERVER,
    _format_metadata_filter,
    format_filters,
    format_ordering,
)
from substra_flows.client.functions import FunctionMethods, _is_tarfile
from substra_flows.client.plans import (
    _CONFIRM_CHUNK,
    DEFAULT_BATCH_SIZE,
    IMPLICIT_PLAN_NAMESPACE,
    PlanMethods,
    PlanSubmission,
    implicit_plan_key,
    make_batches,
)
from substra_flows.client.results import ResultMethods
from substra_flows.client.waits import LOG_TAIL_LINES, WaitMethods
from substra_flows.config import ClientSettings, resolve_settings
from substra_flows.schemas import build_spec, check_key
from substra_flows.transport import Safety, Transport, is_ambiguous, safe_join

__all__ = [
    "ALLOWED_FILTERS",
    "ALLOWED_ORDERING",
    "DEFAULT_BATCH_SIZE",
    "GENERATED_DESCRIPTION",
    "IGNORED_BY_SERVER",
    "IMPLICIT_PLAN_NAMESPACE",
    "LOG_TAIL_LINES",
    "Client",
    "ClientCore",
    "ModelT",
    "PlanSubmission",
    "SubstraClient",
    "format_filters",
    "format_ordering",
    "implicit_plan_key",
    "logger",
    "make_batches",
    "zip_folder",
]

# names the single-module client offered (private helpers and its project imports), kept importable from here
_KEPT = (
    ClientSettings,
    Safety,
    Transport,
    build_spec,
    check_key,
    exc,
    is_ambiguous,
    models,
    resolve_settings,
    safe_join,
    schemas,
    waiting,
    _CONFIRM_CHUNK,
    _LIST,
    _METADATA,
    _NAME,
    _SINGLE,
    _STATUS,
    _STATUS_VALUES,
    _format_metadata_filter,
    _is_tarfile,
    _key_of,
    _parse,
    _unique_part_name,
)


class SubstraClient(DownloadMethods, ResultMethods, WaitMethods, PlanMethods, FunctionMethods, DatasetMethods):
    """Client of one Substra organization (the SDK's ``Client`` in remote mode).

    Settings come from code, then ``SUBSTRA_<CLIENT_NAME>_<ATTR>`` environment variables, then
    the ``client_name`` section of the YAML ``configuration_file``. Defaults:
    ``insecure=False``, ``retry_timeout=300`` (seconds of retrying per call),
    ``connect_timeout=10``, ``read_timeout=120``, ``max_attempts=6``, ``backoff=1``,
    ``backoff_max=30``, ``page_size=1000``, ``max_json_bytes=256 MiB`` (largest JSON or text
    body loaded in memory; larger answers raise InvalidResponse). With ``username``/``password`` and no token, the
    client logs in at once and logs out on ``close()`` / leaving a ``with`` block; it also
    logs in again (once) when the server answers 401.
    """


Client = SubstraClient
