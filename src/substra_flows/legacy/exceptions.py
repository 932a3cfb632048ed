"""Errors of the 0.x surface: the SDK 0.x exception names, plus one for what 1.0 cannot express.

The 0.x SDK raised ``substra.exceptions.AlreadyExists``, ``NotFound``, ``InvalidRequest``...; the
same names are re-exported here from :mod:`substra_flows.exceptions`, so ``except AlreadyExists``
in a 0.x script keeps working. :class:`LegacyTranslationError` is new: an option, a field or a
value that has no meaning on a 1.0 deployment is refused with it, never dropped silently.
"""

from __future__ import annotations

from typing import Any

from substra_flows.exceptions import (
    AlreadyExists,
    AuthenticationError,
    AuthorizationError,
    BadLoginException,
    ConfigurationError,
    ConnectionError,
    HTTPError,
    InternalServerError,
    InvalidRequest,
    InvalidResponse,
    NotFound,
    RequestException,
    SDKException,
    SpecValidationError,
    SubstraError,
    Timeout,
)

__all__ = [
    "AlreadyExists",
    "AuthenticationError",
    "AuthorizationError",
    "BadLoginException",
    "ConfigurationError",
    "ConnectionError",
    "HTTPError",
    "InternalServerError",
    "InvalidRequest",
    "InvalidResponse",
    "LegacyTranslationError",
    "NotFound",
    "ProfileNotFoundError",
    "RequestException",
    "SDKException",
    "SpecValidationError",
    "SubstraError",
    "Timeout",
    "already_exists",
    "invalid_request",
    "not_found",
]


class LegacyTranslationError(SpecValidationError):
    """A 0.x argument, option or field with no 1.0 equivalent (raised before any request)."""


class ProfileNotFoundError(ConfigurationError):
    """The named profile is neither in memory nor in the config file."""


def already_exists(what: str, key: str) -> AlreadyExists:
    """The error 0.x raised when an asset with the same identity existed (409, with its key)."""
    return AlreadyExists(f"{what} already exists (key {key})", status_code=409, key=key)


def invalid_request(message: str, **kwargs: Any) -> InvalidRequest:
    """A 0.x rule refused the request (the 0.x server answered 400 for these)."""
    return InvalidRequest(message, status_code=400, **kwargs)


def not_found(kind: str, key: str, why: str = "") -> NotFound:
    """No 0.x asset of this kind has this key."""
    suffix = f": {why}" if why else ""
    return NotFound(f"no {kind} with key {key}{suffix}", status_code=404, key=key)
