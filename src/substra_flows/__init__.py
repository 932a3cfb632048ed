"""substra-flows: a robust Substra client, shared by Airflow and Prefect integrations.

``import substra_flows`` is quick: the client, its models and specs are imported when first used
(``substra_flows.SubstraClient``...), and only the core (requests, pydantic, tenacity, pyyaml) then;
the Airflow provider, the Prefect collection, the local node and ``compat`` are imported on demand.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names below are loaded on first use (PEP 562), so that the import stays fast
    from substra_flows import exceptions, models, schemas
    from substra_flows.client import Client, PlanSubmission, SubstraClient
    from substra_flows.config import ClientSettings
    from substra_flows.exceptions import (
        AlreadyExists,
        AssetMaybeCreatedError,
        AuthenticationError,
        AuthorizationError,
        FutureError,
        FutureFailureError,
        FutureTimeoutError,
        GatewayUnavailable,
        InvalidRequest,
        InvalidResponse,
        NotFound,
        SpecValidationError,
        SubstraError,
    )
    from substra_flows.models import ComputePlanStatus, ComputeTaskStatus, FunctionStatus, TaskErrorType
    from substra_flows.schemas import (
        AssetKind,
        ComputePlanSpec,
        ComputePlanTaskSpec,
        ComputeTaskOutputSpec,
        DataSampleSpec,
        DatasetSpec,
        FunctionInputSpec,
        FunctionOutputSpec,
        FunctionSpec,
        InputRef,
        Permissions,
        TaskSpec,
    )

#: where each public name lives; the module is imported when the name is first used
_LAZY: dict[str, str] = {
    "exceptions": "substra_flows.exceptions",
    "models": "substra_flows.models",
    "schemas": "substra_flows.schemas",
    "Client": "substra_flows.client",
    "PlanSubmission": "substra_flows.client",
    "SubstraClient": "substra_flows.client",
    "ClientSettings": "substra_flows.config",
    **{
        name: "substra_flows.exceptions"
        for name in (
            "AlreadyExists",
            "AssetMaybeCreatedError",
            "AuthenticationError",
            "AuthorizationError",
            "FutureError",
            "FutureFailureError",
            "FutureTimeoutError",
            "GatewayUnavailable",
            "InvalidRequest",
            "InvalidResponse",
            "NotFound",
            "SpecValidationError",
            "SubstraError",
        )
    },
    **{
        n: "substra_flows.models"
        for n in ("ComputePlanStatus", "ComputeTaskStatus", "FunctionStatus", "TaskErrorType")
    },
    **{
        name: "substra_flows.schemas"
        for name in (
            "AssetKind",
            "ComputePlanSpec",
            "ComputePlanTaskSpec",
            "ComputeTaskOutputSpec",
            "DataSampleSpec",
            "DatasetSpec",
            "FunctionInputSpec",
            "FunctionOutputSpec",
            "FunctionSpec",
            "InputRef",
            "Permissions",
            "TaskSpec",
        )
    },
}


def __getattr__(name: str) -> Any:
    """Import the module that defines ``name`` on first use, then keep the value here."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'substra_flows' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = module if module_name.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "AssetKind",
    "AssetMaybeCreatedError",
    "AuthenticationError",
    "AuthorizationError",
    "Client",
    "ClientSettings",
    "ComputePlanSpec",
    "ComputePlanStatus",
    "ComputePlanTaskSpec",
    "ComputeTaskOutputSpec",
    "ComputeTaskStatus",
    "DataSampleSpec",
    "DatasetSpec",
    "FunctionInputSpec",
    "FunctionOutputSpec",
    "FunctionSpec",
    "FunctionStatus",
    "FutureError",
    "FutureFailureError",
    "FutureTimeoutError",
    "GatewayUnavailable",
    "InputRef",
    "InvalidRequest",
    "InvalidResponse",
    "NotFound",
    "Permissions",
    "PlanSubmission",
    "SpecValidationError",
    "SubstraClient",
    "SubstraError",
    "TaskErrorType",
    "TaskSpec",
    "__version__",
    "exceptions",
    "models",
    "schemas",
]
