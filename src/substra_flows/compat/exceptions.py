"""Errors that belong to both families: each is an instance of the project's exception and of the
official SDK's exception of the same name, so ``except substra.exceptions.NotFound`` and
``except substra_flows.exceptions.NotFound`` both keep working with :class:`~substra_flows.compat.Client`.

``NotFound`` here is ``class NotFound(substra_flows.exceptions.NotFound, substra.sdk.exceptions.NotFound)``,
and so on for every project error; :func:`translate` turns a project error into its twin.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from substra.sdk import exceptions as sdk

from substra_flows import exceptions as flows

#: project error -> the SDK errors of the same meaning (the name is the SDK's, save where noted)
_SDK_TWINS: dict[type[flows.SubstraError], tuple[type[BaseException], ...]] = {
    flows.SubstraError: (sdk.SDKException,),
    flows.ConfigurationError: (sdk.BadConfiguration, sdk.ConfigurationInfoError),
    flows.SpecRuleError: (sdk.InvalidRequest,),
    flows.LoadDataException: (sdk.LoadDataException,),
    flows.KeyFormatError: (sdk.ComputePlanKeyFormatError,),
    flows.FilterFormatError: (sdk.FilterFormatError,),
    flows.NotAllowedFilterError: (sdk.NotAllowedFilterError,),
    flows.OrderingFormatError: (sdk.OrderingFormatError,),
    flows.RequestException: (sdk.RequestException,),
    flows.ConnectionError: (sdk.ConnectionError,),
    flows.Timeout: (sdk.Timeout,),
    flows.HTTPError: (sdk.HTTPError,),
    flows.InvalidRequest: (sdk.InvalidRequest,),
    flows.AuthenticationError: (sdk.AuthenticationError,),
    flows.AuthorizationError: (sdk.AuthorizationError,),
    flows.NotFound: (sdk.NotFound,),
    flows.RequestTimeout: (sdk.RequestTimeout,),
    flows.AlreadyExists: (sdk.AlreadyExists,),
    flows.InternalServerError: (sdk.InternalServerError,),
    flows.GatewayUnavailable: (sdk.GatewayUnavailable,),
    flows.BadLoginException: (sdk.BadLoginException,),
    flows.UsernamePasswordLoginDisabledException: (sdk.UsernamePasswordLoginDisabledException,),
    flows.InvalidResponse: (sdk.InvalidResponse,),
    flows.TaskAssetError: (sdk._TaskAssetError,),
    flows.TaskAssetNotFoundError: (sdk.TaskAssetNotFoundError,),
    flows.TaskAssetMultipleFoundError: (sdk.TaskAssetMultipleFoundError,),
    flows.FutureError: (sdk.FutureError,),
    flows.FutureTimeoutError: (sdk.FutureTimeoutError,),
    flows.FutureFailureError: (sdk.FutureFailureError,),
}

_TWINS: dict[type[flows.SubstraError], type[flows.SubstraError]] = {}
_TWINS_LOCK = threading.Lock()


def _sdk_bases(error_class: type[flows.SubstraError]) -> tuple[type[BaseException], ...]:
    """The SDK classes of ``error_class``: its own entry, else that of its nearest listed ancestor
    (``TooManyRequests`` -> ``HTTPError``, ``AssetMaybeCreatedError`` -> ``RequestException``)."""
    for ancestor in error_class.__mro__:
        if ancestor in _SDK_TWINS:
            return _SDK_TWINS[ancestor]
    return (sdk.SDKException,)


def twin_class(error_class: type[flows.SubstraError]) -> type[flows.SubstraError]:
    """The class that is both ``error_class`` and its SDK counterpart(s) (built once)."""
    if error_class in _TWINS.values():
        return error_class
    found = _TWINS.get(error_class)
    if found is None:
        with _TWINS_LOCK:
            found = _TWINS.get(error_class)
            if found is None:
                bases = tuple(b for b in _sdk_bases(error_class) if not issubclass(error_class, b))
                doc = f"{error_class.__doc__ or error_class.__name__}\n\nAlso an instance of " + ", ".join(
                    f"substra.sdk.exceptions.{b.__name__}" for b in bases
                )
                found = type(error_class.__name__, (error_class, *bases), {"__module__": __name__, "__doc__": doc})
                _TWINS[error_class] = found
    return found


def translate(error: flows.SubstraError) -> flows.SubstraError:
    """The same error (message, attributes, cause, traceback) as an instance of its twin class."""
    twin = twin_class(type(error))
    if type(error) is twin:
        return error
    copy = twin.__new__(twin)
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    # attributes the SDK's classes define and the project's do not
    if isinstance(copy, sdk._TaskAssetError) and not hasattr(copy, "message"):
        copy.message = str(error)
    if isinstance(copy, sdk.InvalidResponse) and not hasattr(copy, "response"):
        copy.response = None
    copy.__cause__ = error.__cause__
    copy.__context__ = error.__context__
    copy.__suppress_context__ = error.__suppress_context__
    copy.__traceback__ = error.__traceback__
    return copy


def _export(names: list[str]) -> None:
    """Make ``substra_flows.compat.exceptions.NotFound`` (etc.) the twin classes, for ``except``."""
    module = sys.modules[__name__]
    for name in names:
        setattr(module, name, twin_class(getattr(flows, name)))


#: every project error class, by name, as its twin (``compat.exceptions.NotFound``...)
EXPORTED: list[str] = [
    name
    for name in flows.__all__
    if isinstance(getattr(flows, name), type) and issubclass(getattr(flows, name), flows.SubstraError)
]
_export(EXPORTED)


def __getattr__(name: str) -> Any:  # for type checkers and readers: the names are set by _export
    raise AttributeError(name)
