"""One error hierarchy for everything the client can raise.

Names follow the official SDK (``RequestException``, ``NotFound``, ``AlreadyExists``,
``FutureFailureError``...) so code written against it keeps working, but every error here
also carries the HTTP method, the URL path, the status code, the asset key when known and the
server's own message. Secrets are scrubbed from every message (see :func:`redact`).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "AlreadyExists",
    "AssetMaybeCreatedError",
    "AuthenticationError",
    "AuthorizationError",
    "BadConfiguration",
    "BadLoginException",
    "ComputePlanKeyFormatError",
    "ConfigurationError",
    "ConfigurationInfoError",
    "ConnectionError",
    "FilterFormatError",
    "FutureError",
    "FutureFailureError",
    "FutureTimeoutError",
    "GatewayUnavailable",
    "HTTPError",
    "InternalServerError",
    "InvalidRequest",
    "InvalidResponse",
    "InvalidSpec",
    "TRANSIENT_ERRORS",
    "KeyFormatError",
    "LoadDataException",
    "NotAllowedFilterError",
    "NotFound",
    "OrderingFormatError",
    "RequestException",
    "RequestTimeout",
    "SDKException",
    "SpecRuleError",
    "SpecValidationError",
    "SubstraError",
    "TaskAssetError",
    "TaskAssetMultipleFoundError",
    "TaskAssetNotFoundError",
    "Timeout",
    "TooManyRequests",
    "UnknownSpecKeysWarning",
    "UnsafePathError",
    "UsernamePasswordLoginDisabledException",
    "is_transient",
    "register_secret",
    "retry_cannot_help",
    "redact",
    "redact_obj",
    "ModelExportDisabled",
]

# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------

_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()
_MIN_SECRET_LEN = 4  # never register trivially short strings: they would mangle normal text

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # credentials look like long opaque strings; short words ("Token removed") are left alone
    (re.compile(r"\b(Token|Bearer|Basic)\s+[A-Za-z0-9._~+/=\-]{16,}"), r"\1 ***"),
    # the closing quote is optional: a body cut short (error snippets) must not leak half a token
    (re.compile(r"""(["']?(?:token|password|secret)["']?\s*[:=]\s*)["'][^"']*["']?""", re.I), r"\1'***'"),
    (re.compile(r"\b(token|password)=[^&\s]+", re.I), r"\1=***"),
)


def register_secret(value: str | None) -> None:
    """Remember a token or password so that :func:`redact` scrubs it from any text later."""
    if value and len(value) >= _MIN_SECRET_LEN:
        with _SECRETS_LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and every credential-looking pattern masked."""
    if not text:
        return text
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, "***")
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_obj(value: Any) -> Any:
    """:func:`redact` applied to every string inside nested dicts/lists (e.g. a parsed body)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redact_obj(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_obj(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------


class SubstraError(Exception):
    """Base class of every error raised by substra_flows (the SDK calls it ``SDKException``)."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        key: str | list[str] | None = None,
        method: str | None = None,
        url: str | None = None,
        detail: Any = None,
    ) -> None:
        self.msg = redact(str(message))
        self.status_code = status_code
        self.key = key
        self.method = method
        self.url = url
        self.detail = redact_obj(detail)
        super().__init__(self.msg)

    def __str__(self) -> str:
        return self.msg

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.msg!r}, status_code={self.status_code!r}, key={self.key!r})"


SDKException = SubstraError


class ConfigurationError(SubstraError):
    """The client settings are missing or inconsistent (no URL, unreadable YAML file...)."""


BadConfiguration = ConfigurationError
ConfigurationInfoError = ConfigurationError


# --------------------------------------------------------------------------------------------
# Client-side validation
# --------------------------------------------------------------------------------------------


class SpecValidationError(SubstraError, ValueError):
    """A spec or argument was rejected before any request was sent.

    ``errors`` is a list of ``{"field": "a.b.0", "value": <bad value>, "message": str}``;
    ``field`` and ``value`` repeat the first one for convenience.
    """

    def __init__(self, message: str, *, errors: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.errors: list[dict[str, Any]] = [dict(e) for e in (errors or [])]
        first = self.errors[0] if self.errors else {}
        self.field: str | None = first.get("field")
        self.value: Any = first.get("value")
        super().__init__(message)

    @classmethod
    def for_field(cls, field: str, value: Any, message: str, *, spec: str | None = None) -> SpecValidationError:
        """Build the error for a single bad field, with a message naming the field and the value."""
        where = f"{spec}.{field}" if spec else field
        text = f"invalid {where}={_short_repr(value)}: {message}"
        return cls(text, errors=[{"field": field, "value": value, "message": message}])


InvalidSpec = SpecValidationError


class LoadDataException(SpecValidationError):
    """A local file or folder referenced by a spec is missing or unusable."""


class KeyFormatError(SpecValidationError):
    """An asset key is not a UUID (keys are hyphenated UUID strings on the wire)."""


ComputePlanKeyFormatError = KeyFormatError


class FilterFormatError(SpecValidationError):
    """A list filter has the wrong shape (e.g. a string where a list is expected)."""


class NotAllowedFilterError(SpecValidationError):
    """A filter that this route does not support (or that the server would silently ignore)."""


class OrderingFormatError(SpecValidationError):
    """An ``order_by`` value that the route cannot sort on."""


class UnknownSpecKeysWarning(UserWarning):
    """A spec carried keys it does not define; they were dropped, as the official SDK drops them.

    The ``strict=True`` client setting turns this into a :class:`SpecValidationError`.
    """


class UnsafePathError(SubstraError):
    """A download file name (from the server or built from a key) would escape its folder."""


# --------------------------------------------------------------------------------------------
# Transport and HTTP errors
# --------------------------------------------------------------------------------------------


class RequestException(SubstraError):
    """A request failed: it could not be sent, got no answer, or got an error status."""


class ConnectionError(RequestException):
    """The connection failed. ``request_sent`` is False only when the request provably never
    reached the server (connection refused, DNS failure, connect timeout)."""

    def __init__(
        self, message: str, *, request_sent: bool | None = None, transient: bool = True, **kwargs: Any
    ) -> None:
        self.request_sent = request_sent
        #: False for failures that retrying cannot fix (e.g. a TLS certificate error)
        self.transient = transient
        super().__init__(message, **kwargs)


class Timeout(RequestException):
    """The server did not answer in time (read timeout): the request may have been processed."""


class HTTPError(RequestException):
    """The server answered with an error status. ``errors`` holds the parsed body, if JSON."""

    def __init__(
        self,
        message: str,
        *,
        errors: Any = None,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.errors = redact_obj(errors)
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class InvalidRequest(HTTPError):
    """400: the server refused the request content."""


class AuthenticationError(HTTPError):
    """401: missing, unknown or expired token."""


class AuthorizationError(HTTPError):
    """403: authenticated, but not allowed."""


class ModelExportDisabled(AuthorizationError):
    """403 on a model download because the channel's ``model_export_enabled`` is off (the Helm chart's default)."""


class NotFound(HTTPError):
    """404: unknown key (or page out of range)."""


class RequestTimeout(HTTPError):
    """408: the orchestrator cancelled the operation; it may or may not have been applied."""


class AlreadyExists(HTTPError):
    """409: an asset with this key already exists."""


class TooManyRequests(HTTPError):
    """429: throttled; ``retry_after`` holds the server's hint in seconds, if any."""


class SpecRuleError(SpecValidationError, InvalidRequest):
    """A spec breaks a rule the server enforces with a 400 (metadata keys and sizes, name lengths,
    task ids, dependency cycles). Caught before sending; the official SDK reports these as
    ``InvalidRequest``, so this error is one too (and a ``SpecValidationError``, a ``ValueError``)."""

    def __init__(self, message: str, *, errors: Sequence[Mapping[str, Any]] | None = None) -> None:
        super().__init__(message, errors=errors)
        # HTTPError.__init__, further along the MRO, reset ``errors`` to the (absent) server body
        self.errors = [dict(e) for e in (errors or [])]


class InternalServerError(HTTPError):
    """500: uncaught server error (often a non-JSON body)."""


class GatewayUnavailable(HTTPError):
    """502, 503 or 504: a proxy or the orchestrator is unavailable."""


class BadLoginException(AuthenticationError):
    """The server refused to log in with these credentials (400/401 on /api-token-auth/)."""


class UsernamePasswordLoginDisabledException(AuthorizationError):
    """The server disabled username/password login: generate an API token in the web UI."""


class AssetMaybeCreatedError(RequestException):
    """A server-keyed creation (dataset, function, data sample) failed ambiguously.

    The request may have reached the server and created the asset; it was NOT resent, since a
    blind retry could create a duplicate. Look the asset up (e.g. by name) before creating it
    again. ``cause`` is the underlying error.
    """

    def __init__(self, message: str, *, cause: SubstraError, asset_type: str, **kwargs: Any) -> None:
        self.cause = cause
        self.asset_type = asset_type
        kwargs.setdefault("status_code", cause.status_code)
        kwargs.setdefault("method", cause.method)
        kwargs.setdefault("url", cause.url)
        super().__init__(message, **kwargs)


class InvalidResponse(SubstraError):
    """The server's answer could not be used: not JSON, too big, or missing required fields.

    ``garbled`` is True for a body the server declared as JSON that does not parse: cut or
    corrupted in transit, so a safe request may be sent again (unlike, say, an HTML page).
    """

    def __init__(self, message: str, *, garbled: bool = False, **kwargs: Any) -> None:
        self.garbled = garbled
        super().__init__(message, **kwargs)


# --------------------------------------------------------------------------------------------
# Task assets
# --------------------------------------------------------------------------------------------


class TaskAssetError(SubstraError):
    """Base of the output-asset lookup errors."""

    def __init__(self, message: str, *, compute_task_key: str, identifier: str) -> None:
        self.compute_task_key = compute_task_key
        self.identifier = identifier
        super().__init__(message, key=compute_task_key)


class TaskAssetNotFoundError(TaskAssetError):
    """No output asset of the task has this identifier."""

    def __init__(self, compute_task_key: str, identifier: str) -> None:
        super().__init__(
            f"task {compute_task_key} has no output asset with identifier {identifier!r}",
            compute_task_key=compute_task_key,
            identifier=identifier,
        )


class TaskAssetMultipleFoundError(TaskAssetError):
    """Several output assets of the task share this identifier."""

    def __init__(self, compute_task_key: str, identifier: str) -> None:
        super().__init__(
            f"task {compute_task_key} has several output assets with identifier {identifier!r}",
            compute_task_key=compute_task_key,
            identifier=identifier,
        )


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------


class FutureError(SubstraError):
    """Base class for errors raised while waiting for an asset to reach a final state."""

    def __init__(
        self,
        message: str,
        *,
        key: str,
        kind: str,
        status: str | None,
        asset: Any = None,
    ) -> None:
        self.kind = kind
        self.status = status
        self.asset = asset
        super().__init__(message, key=key)


class FutureTimeoutError(FutureError):
    """The deadline passed before the asset reached a final state."""

    def __init__(
        self,
        message: str,
        *,
        key: str,
        kind: str,
        status: str | None,
        timeout: float | None,
        asset: Any = None,
    ) -> None:
        self.timeout = timeout
        super().__init__(message, key=key, kind=kind, status=status, asset=asset)


class FutureFailureError(FutureError):
    """The asset ended failed or canceled. ``failed_task_keys`` names the culprits, ``logs`` maps
    each of them to the tail of its logs and ``error_types`` to its error type (when known)."""

    def __init__(
        self,
        message: str,
        *,
        key: str,
        kind: str,
        status: str | None,
        failed_task_keys: Iterable[str] = (),
        logs: Mapping[str, str] | None = None,
        error_types: Mapping[str, str] | None = None,
        asset: Any = None,
    ) -> None:
        self.failed_task_keys = list(failed_task_keys)
        self.logs = dict(logs or {})
        #: error type of each failed task, when known (``BUILD_ERROR``, ``EXECUTION_ERROR``, ...)
        self.error_types = dict(error_types or {})
        super().__init__(message, key=key, kind=kind, status=status, asset=asset)


def _short_repr(value: Any, limit: int = 120) -> str:
    """repr() of a value, cut to ``limit`` characters so error messages stay readable."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# Retry classification (shared by the Airflow and Prefect faces)
# --------------------------------------------------------------------------------------------

#: errors a later attempt may not meet, once the client's own retries are spent
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    Timeout,
    RequestTimeout,
    TooManyRequests,
    GatewayUnavailable,
    # a creation that may have happened: the steps look the asset up by fingerprint before creating it again
    AssetMaybeCreatedError,
)


def is_transient(error: BaseException | None) -> bool:
    """True for errors a later attempt may not meet (never for refusals, failures or deadlines)."""
    if isinstance(error, ConnectionError) and not error.transient:
        return False  # e.g. a TLS certificate error: retrying cannot fix it
    return isinstance(error, TRANSIENT_ERRORS)


def retry_cannot_help(error: BaseException | None) -> str | None:
    """Why running the same step again would fail the same way, or None when it might not.

    The faces fail for good on these (Airflow: ``AirflowFailException``; Prefect: no retry) instead of
    spending their retries: a setting of the deployment, a permission or the input must change first.
    """
    if isinstance(error, ModelExportDisabled):
        return "model export is disabled on the channel (model_export_enabled is false)"
    if isinstance(error, (BadLoginException, UsernamePasswordLoginDisabledException)):
        return "the organization refused these credentials"
    if isinstance(error, AuthenticationError):
        return "the organization refused the credentials (401)"
    if isinstance(error, AuthorizationError):
        return "permission refused (403)" + (" by the orchestrator (OE0102)" if "OE0102" in str(error) else "")
    if isinstance(error, SpecValidationError):
        return "invalid input"
    if isinstance(error, InvalidRequest):
        return "the organization refused the request as invalid (400)"
    if isinstance(error, ConfigurationError):
        return "the client is misconfigured"
    if isinstance(error, ConnectionError) and not error.transient:
        return "the connection cannot be established (not a transient failure)"
    if isinstance(error, FutureFailureError) and "BUILD_ERROR" in error.error_types.values():
        return (
            "the function's image failed to build (BUILD_ERROR): every task using that function fails the same "
            "way; register a corrected function"
        )
    return None
