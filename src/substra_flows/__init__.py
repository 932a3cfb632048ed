"""substra-flows: a robust Substra client, shared by Airflow and Prefect integrations.

``import substra_flows`` loads only the core (requests, pydantic, tenacity, pyyaml): the
Airflow provider, the Prefect collection and the local node are imported on demand.
"""

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
