"""``compat.Client``: the official ``substra.Client`` 1.0 (remote mode) on the hardened client.

Code written for the SDK runs unchanged: same constructor keywords, same methods and
signatures, answers as ``substra.sdk.models`` instances (their enums, so ``is`` works), specs of
``substra.sdk.schemas`` or plain dicts, and errors that are instances of both the SDK's exception
and the project's (:mod:`substra_flows.compat.exceptions`). Underneath, the calls go through
:class:`~substra_flows.SubstraClient`: timeouts, retries where safe, idempotent plans and tasks,
one re-login on 401.

Where the SDK's behaviour is an accident of its transport rather than its contract, the hardened
behaviour is kept: a second ``cancel_compute_plan`` succeeds (the server's 500 is settled by reading
the plan), and lists ask for large pages.
"""

from __future__ import annotations

import functools
import inspect
import os
import pathlib
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import substra
from substra.sdk import models as sdk_models
from substra.sdk import schemas as sdk_schemas

from substra_flows import exceptions as exc
from substra_flows import models, waiting
from substra_flows.client import SubstraClient
from substra_flows.compat.exceptions import translate

F = TypeVar("F", bound=Callable[..., Any])


class SdkModels:
    """The response classes the compat client parses answers into: the official SDK's."""

    Task = sdk_models.Task
    ComputePlan = sdk_models.ComputePlan
    Function = sdk_models.Function
    Dataset = sdk_models.Dataset
    DataSample = sdk_models.DataSample
    Model = sdk_models.OutModel
    InputAsset = sdk_models.InputAsset
    OutputAsset = sdk_models.OutputAsset
    Organization = sdk_models.Organization
    OrganizationInfo = sdk_models.OrganizationInfo
    Performances = sdk_models.Performances


def _sdk_errors(method: F) -> F:
    """Re-raise project errors as their twins (instances of the SDK's class of that name too)."""
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await method(*args, **kwargs)
            except exc.SubstraError as error:
                twin = translate(error)
                if twin is error:
                    raise
                raise twin.with_traceback(error.__traceback__) from error.__cause__

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except exc.SubstraError as error:
            twin = translate(error)
            if twin is error:
                raise
            raise twin.with_traceback(error.__traceback__) from error.__cause__

    return wrapper  # type: ignore[return-value]


def _existing_folder(folder: str | os.PathLike[str]) -> None:
    """The SDK writes downloads with ``open()``: a missing folder is a FileNotFoundError, not created."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, "No such file or directory (the destination folder must exist)", str(folder))


def _sdk_timeout(timeout: float | None) -> float | None:
    """The SDK only checks a truthy timeout: ``timeout=0`` waits without deadline, as there."""
    return timeout or None


class Client(SubstraClient, substra.Client):
    """Drop-in for ``substra.Client`` in remote mode (``isinstance(client, substra.Client)`` holds).

    Keywords: those of ``substra.Client`` 1.0 (``url``, ``token``, ``username``, ``password``,
    ``insecure``, ``retry_timeout``, ``backend_type``, ``client_name``, ``configuration_file``), plus
    the hardened client's own (``connect_timeout``, ``read_timeout``, ``max_attempts``, ``strict``...).
    ``backend_type`` may be omitted or ``"remote"``; the local backends are the SDK's own business.
    """

    _models = SdkModels

    def __init__(
        self,
        *,
        client_name: str | None = None,
        configuration_file: str | os.PathLike[str] | None = None,
        url: str | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        retry_timeout: float | None = None,
        insecure: bool | None = None,
        backend_type: str | sdk_schemas.BackendType | None = None,
        **settings: Any,
    ) -> None:
        try:
            super().__init__(
                client_name=client_name,
                configuration_file=configuration_file,
                url=url,
                token=token,
                username=username,
                password=password,
                retry_timeout=retry_timeout,
                insecure=insecure,
                backend_type=backend_type,
                **settings,
            )
        except exc.SubstraError as error:
            raise translate(error).with_traceback(error.__traceback__) from error.__cause__

    def __del__(self) -> None:
        # as the SDK: a client that logged in logs out when it is collected (never raising here)
        try:
            if getattr(self, "_login_info", None) is not None:
                self.logout()
        except Exception:  # nothing useful can be done in a finalizer
            pass

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return super().__repr__().replace("SubstraClient(", "compat.Client(", 1)

    # -- properties of the SDK's surface ----------------------------------------------------------

    @property
    def backend_mode(self) -> sdk_schemas.BackendType:
        """``BackendType.REMOTE``, the SDK's enum."""
        return sdk_schemas.BackendType.REMOTE

    @property
    def temp_directory(self) -> None:
        """None: only the SDK's local backends have a temporary directory."""
        return None

    # -- where the SDK's answers differ from the project's -----------------------------------------

    def add_compute_plan(
        self, data: dict | Any, auto_batching: bool = True, batch_size: int = 500
    ) -> sdk_models.ComputePlan:
        """As the SDK: a plan key that is not a UUID raises ComputePlanKeyFormatError."""
        key = data.get("key") if isinstance(data, dict) else getattr(data, "key", None)
        if key is not None:
            try:
                uuid.UUID(str(key))
            except ValueError:
                raise exc.KeyFormatError.for_field(
                    "key", key, "the compute plan key must be a UUID, e.g. str(uuid.uuid4())"
                ) from None
        return super().add_compute_plan(data, auto_batching, batch_size)

    def get_performances(
        self, key: str, *, wait_completion: bool = False
    ) -> sdk_models.Performances:
        """The SDK's ``Performances``, with its plan statuses as ``ComputePlanStatus`` members."""
        ours: models.Performances = super().get_performances(key, wait_completion=wait_completion)
        columns = {name: list(getattr(ours, name)) for name in models.Performances.model_fields}
        columns["compute_plan_status"] = [_plan_status(s) for s in ours.compute_plan_status]
        # built like the SDK builds it (appended, not validated: dates may be None there too)
        return sdk_models.Performances.model_construct(**columns)

    def wait_task(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 2.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> Any:
        """As ``substra.Client.wait_task``."""
        return super().wait_task(
            key,
            timeout=_sdk_timeout(timeout),
            polling_period=polling_period,
            raise_on_failure=raise_on_failure,
            not_found_grace=not_found_grace,
            on_progress=on_progress,
        )

    def wait_compute_plan(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 2.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> Any:
        """As ``substra.Client.wait_compute_plan``."""
        return super().wait_compute_plan(
            key,
            timeout=_sdk_timeout(timeout),
            polling_period=polling_period,
            raise_on_failure=raise_on_failure,
            not_found_grace=not_found_grace,
            on_progress=on_progress,
        )

    def wait_function(
        self,
        key: str,
        *,
        timeout: float | None = None,
        polling_period: float = 1.0,
        raise_on_failure: bool = True,
        not_found_grace: float = waiting.NOT_FOUND_GRACE,
        on_progress: waiting.ProgressCallback | None = None,
    ) -> Any:
        """As ``substra.Client.wait_function``."""
        return super().wait_function(
            key,
            timeout=_sdk_timeout(timeout),
            polling_period=polling_period,
            raise_on_failure=raise_on_failure,
            not_found_grace=not_found_grace,
            on_progress=on_progress,
        )

    def download_dataset(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """As the SDK: into an existing folder."""
        _existing_folder(destination_folder)
        return super().download_dataset(key, destination_folder)

    def download_function(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """As the SDK: into an existing folder."""
        _existing_folder(destination_folder)
        return super().download_function(key, destination_folder)

    def download_model(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """As the SDK: into an existing folder."""
        _existing_folder(destination_folder)
        return super().download_model(key, destination_folder)

    def download_model_from_task(self, task_key: str, identifier: str, folder: str | os.PathLike[str]) -> pathlib.Path:
        """As the SDK: into an existing folder."""
        _existing_folder(folder)
        return super().download_model_from_task(task_key, identifier, folder)

    def download_logs(self, task_key: str, folder: str | os.PathLike[str]) -> str:
        """As the SDK: into an existing folder."""
        _existing_folder(folder)
        return super().download_logs(task_key, folder)


def _plan_status(value: Any) -> Any:
    """The SDK's ComputePlanStatus member for a wire string (unknown strings stay strings)."""
    try:
        return sdk_models.ComputePlanStatus(value)
    except ValueError:
        return value


def _wrap_public_methods(cls: type) -> None:
    """Every public method of the client (its own and inherited) raises twin errors."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attribute = inspect.getattr_static(cls, name)
        if isinstance(attribute, (staticmethod, classmethod, property)) or not callable(attribute):
            continue
        setattr(cls, name, _sdk_errors(attribute))


_wrap_public_methods(Client)
__all__ = ["Client", "SdkModels"]
