"""HTTP transport: one ``requests.Session``, token auth, timeouts, retries, error mapping.

Every call states how safe it is to repeat (:class:`Safety`, after substra-rest-api.md §7):

* ``SAFE``: GETs, PUTs, client-keyed POSTs (compute plan, task batches), merge-only POSTs.
  Retried on connection errors, read timeouts, 408, 429, 502, 503 and 504, and on a body
  declared as JSON that does not parse (cut in transit).
* ``CONNECT_ONLY``: server-keyed creations (dataset, function, data sample). Retried only
  when the request provably never reached the server (connect error) or was refused by
  throttling (429). Any other transient failure is ambiguous: it becomes
  :class:`~substra_flows.exceptions.AssetMaybeCreatedError`, never a blind resend.
* ``NEVER``: login, logout, cancel. Sent once.

A 401 triggers at most one re-login (when the client knows a username and password), then
the call is repeated once.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import pathlib
import random
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import IO, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import tenacity
import urllib3.exceptions

from substra_flows import exceptions as exc

logger = logging.getLogger("substra_flows")

T = TypeVar("T")

ACCEPT_HEADER = "application/json;version=0.0"
USER_AGENT = "substra-flows/0.1"
_ERROR_BODY_CAP = 1024 * 1024
_DOWNLOAD_CHUNK = 1024 * 1024
_TAIL_LINE_CAP = 64 * 1024  # bytes kept of one log line in a failure message
_MAX_PAGES = 100_000

_STATUS_TO_ERROR: dict[int, type[exc.HTTPError]] = {
    400: exc.InvalidRequest,
    401: exc.AuthenticationError,
    403: exc.AuthorizationError,
    404: exc.NotFound,
    408: exc.RequestTimeout,
    409: exc.AlreadyExists,
    429: exc.TooManyRequests,
    500: exc.InternalServerError,
    502: exc.GatewayUnavailable,
    503: exc.GatewayUnavailable,
    504: exc.GatewayUnavailable,
}


class Safety(str, Enum):
    """How safe it is to send a request again after a failure."""

    SAFE = "safe"
    CONNECT_ONLY = "connect_only"
    NEVER = "never"


FileSpec = tuple[str, IO[bytes], str]


class RawBody:
    """A response body as bytes (for parsers that read JSON themselves, e.g. pydantic's
    ``validate_json``), with the transport's own decoding, and its errors, on demand."""

    def __init__(self, content: bytes, response: requests.Response, transport: Transport) -> None:
        self.content = content
        self.content_type = response.headers.get("Content-Type", "")
        #: "METHOD /path/" of the request, for error messages
        self.where = f"{response.request.method} {_path(response.url)}"
        self._response = response
        self._transport = transport

    def json(self) -> Any:
        """The decoded JSON (None for an empty body); InvalidResponse when it is not JSON."""
        return self._transport._decode_json(self.content, self._response)


#: turns a response body into a value, raising InvalidResponse when it cannot
BodyParser = Callable[[RawBody], T]


class Transport:
    """Sends requests to one Substra organization and turns failures into our exceptions."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        insecure: bool = False,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        max_attempts: int = 6,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        retry_timeout: float = 300.0,
        max_json_bytes: int = 256 * 1024 * 1024,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self._origin = (parts.scheme, parts.netloc)
        self._base_path = parts.path
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_timeout = retry_timeout
        self.max_json_bytes = max_json_bytes
        self.sleep = sleep
        self.session = session or requests.Session()
        self.session.headers["Accept"] = ACCEPT_HEADER
        agent = str(self.session.headers.get("User-Agent") or "")
        if not agent or agent.startswith("python-requests/"):  # requests' default goes; a caller's own stays
            self.session.headers["User-Agent"] = USER_AGENT
        self.session.verify = not insecure
        if insecure:
            logger.warning("TLS certificate verification is disabled for %s (insecure=True)", self.base_url)
        self._lock = threading.RLock()
        self._token: str | None = None
        self.token = token
        #: called on a 401 with the token that was refused; returns True when a fresh token is
        #: in place (set by the client when it knows a username and password)
        self.reauthenticate: Callable[[str | None], bool] | None = None
        self._warned_foreign_origin = False

    # -- auth ----------------------------------------------------------------------------

    @property
    def token(self) -> str | None:
        """Current API token (never logged)."""
        with self._lock:
            return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        exc.register_secret(value)
        with self._lock:
            self._token = value

    def __repr__(self) -> str:
        return f"Transport(base_url={self.base_url!r}, token={'***' if self.token else None})"

    def close(self) -> None:
        """Release pooled connections."""
        self.session.close()

    # -- URLs ----------------------------------------------------------------------------

    def url(self, *segments: str, trailing_slash: bool = True) -> str:
        """Absolute URL of a route; each segment is percent-encoded so keys can't add path parts."""
        path = "/".join(quote(str(s).strip("/"), safe="") for s in segments if str(s).strip("/"))
        url = f"{self.base_url}/{path}"
        if trailing_slash and not url.endswith("/"):
            url += "/"
        return url

    def rebase(self, url: str) -> str:
        """Use a server-provided absolute URL (``next`` link, ``storage_address``) on our origin.

        The server builds those URLs from the Host header it saw, which behind a proxy may
        not be ours; sending our token to another host would leak it, so only the path and
        query are kept.
        """
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc:
            return urlunsplit((*self._origin, parts.path, parts.query, ""))
        if (parts.scheme, parts.netloc) != self._origin:
            if not self._warned_foreign_origin:
                logger.warning(
                    "server returned a URL on another origin (%s://%s); using %s://%s instead",
                    parts.scheme,
                    parts.netloc,
                    *self._origin,
                )
                self._warned_foreign_origin = True
            return urlunsplit((*self._origin, parts.path, parts.query, ""))
        return url

    # -- requests ------------------------------------------------------------------------

    def call(
        self,
        method: str,
        url: str,
        reader: Callable[[requests.Response], T],
        *,
        safety: Safety = Safety.SAFE,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Any = None,
        files: Mapping[str, FileSpec] | None = None,
        authenticated: bool = True,
        relogin: bool = True,
        creates: str | None = None,
        key: str | None = None,
    ) -> T:
        """Send one logical request (with retries) and hand the successful response to ``reader``.

        ``creates`` names the server-keyed asset a ``CONNECT_ONLY`` POST creates: ambiguous
        failures then become :class:`~substra_flows.exceptions.AssetMaybeCreatedError`.
        """
        positions = {name: spec[1].tell() for name, spec in (files or {}).items()}

        def attempt() -> T:
            for name, spec in (files or {}).items():
                spec[1].seek(positions[name])
            return self._attempt(
                method,
                url,
                reader,
                params=params,
                json_body=json_body,
                data=data,
                files=files,
                authenticated=authenticated,
                key=key,
            )

        relogged = False
        while True:
            used_token = self.token
            try:
                return self._with_retries(attempt, method, url, safety)
            except exc.AuthenticationError:
                if not (authenticated and relogin and not relogged and self.reauthenticate):
                    raise
                relogged = True
                logger.warning("%s %s: 401 Unauthorized; logging in again once", method, _path(url))
                if not self.reauthenticate(used_token):
                    raise
            except exc.SubstraError as error:
                if creates and safety is Safety.CONNECT_ONLY and is_ambiguous(error):
                    raise exc.AssetMaybeCreatedError(
                        f"{error}. The {creates} may have been created anyway; the request was not sent "
                        "again to avoid a duplicate: look the asset up before creating it again",
                        cause=error,
                        asset_type=creates,
                        key=key,
                    ) from error
                raise

    def request_json(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send a request and return its JSON body (None for an empty body)."""
        return self.call(method, url, self._read_json, **kwargs)

    def request_ok(self, method: str, url: str, **kwargs: Any) -> None:
        """Send a request whose answer is not needed beyond its status (the body is read, so the
        connection is reused, but not parsed: ``bulk_create`` echoes thousands of tasks back)."""
        self.call(method, url, self._read_capped, **kwargs)

    def request_text(self, method: str, url: str, **kwargs: Any) -> str:
        """Send a request and return its body as text (capped like JSON bodies)."""
        return self.call(method, url, self._read_text, **kwargs)

    def request_parsed(self, method: str, url: str, parse: BodyParser[T], **kwargs: Any) -> T:
        """Send a request and return ``parse(body bytes, content type)``. Parsing happens inside the
        retry loop, so a body the parser reports as garbled (cut in transit) is fetched again."""

        def read(response: requests.Response) -> T:
            return parse(RawBody(self._read_capped(response), response, self))

        return self.call(method, url, read, **kwargs)

    def list_all(
        self,
        url: str,
        params: Mapping[str, Any] | None = None,
        *,
        parse_page: BodyParser[tuple[list[Any], str | None]] | None = None,
    ) -> list[Any]:
        """GET every page of a paginated route and concatenate ``results``.

        ``next`` links already carry every query parameter, so they are followed as given
        (re-sending ``params`` would duplicate them). ``parse_page`` turns a page's body into its
        items and ``next`` link (e.g. models validated straight from the bytes), checking its shape
        itself; without it, items are the decoded JSON objects.
        """
        items: list[Any] = []
        seen: set[str] = set()
        next_url: str | None = url
        next_params: Mapping[str, Any] | None = params
        for _ in range(_MAX_PAGES):
            if next_url is None:
                return items
            if parse_page is not None:
                results, link = self.request_parsed("GET", next_url, parse_page, params=next_params)
                items.extend(results)
            else:
                page = self.request_json("GET", next_url, params=next_params)
                if isinstance(page, list):  # a non-paginated route: accept it as a single page
                    items.extend(page)
                    return items
                if not isinstance(page, dict) or not isinstance(page.get("results"), list):
                    raise exc.InvalidResponse(
                        f"GET {_path(next_url)}: expected a page with 'results', got {type(page).__name__}",
                        method="GET",
                        url=_path(next_url),
                    )
                items.extend(page["results"])
                link = page.get("next")
            if not link:
                return items
            next_url, next_params = self.rebase(link), None
            if next_url in seen:
                raise exc.InvalidResponse(f"pagination loop: 'next' repeats {_path(next_url)}", url=_path(url))
            seen.add(next_url)
        raise exc.InvalidResponse(f"more than {_MAX_PAGES} pages at {_path(url)}", url=_path(url))

    def download(self, url: str, destination: pathlib.Path) -> pathlib.Path:
        """Stream a GET to ``destination`` atomically (a temp file renamed once complete)."""
        destination.parent.mkdir(parents=True, exist_ok=True)

        def write(response: requests.Response) -> pathlib.Path:
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=destination.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                        out.write(chunk)
                os.replace(tmp, destination)
            except BaseException:
                pathlib.Path(tmp).unlink(missing_ok=True)
                raise
            return destination

        return self.call("GET", url, write)

    def download_to_folder(self, url: str, folder: pathlib.Path, default_name: str) -> pathlib.Path:
        """Download into ``folder`` under the server's Content-Disposition name (sanitized),
        or ``default_name`` when the server gives none."""

        def write(response: requests.Response) -> pathlib.Path:
            name = filename_from_disposition(response.headers.get("Content-Disposition")) or default_name
            target = safe_join(folder, name)
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out:
                    for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                        out.write(chunk)
                os.replace(tmp, target)
            except BaseException:
                pathlib.Path(tmp).unlink(missing_ok=True)
                raise
            return target

        return self.call("GET", url, write)

    def tail_text(self, url: str, max_lines: int, max_line_bytes: int = _TAIL_LINE_CAP) -> str:
        """GET a text body and keep only its last ``max_lines`` lines (bounded memory).

        Each line keeps at most its last ``max_line_bytes`` bytes: a log without newlines (or a
        hostile server) must not make us buffer the whole body, as ``iter_lines`` would.
        """

        def read_tail(response: requests.Response) -> str:
            lines: deque[bytes] = deque(maxlen=max_lines)
            pending = b""
            for chunk in response.iter_content(_DOWNLOAD_CHUNK):
                *complete, pending = (pending + chunk).split(b"\n")
                lines.extend(line[-max_line_bytes:] for line in complete[-max_lines:])
                pending = pending[-max_line_bytes:]
            if pending:
                lines.append(pending)
            return "\n".join(line.rstrip(b"\r").decode("utf-8", errors="replace") for line in lines)

        return self.call("GET", url, read_tail)

    # -- internals -----------------------------------------------------------------------

    def _with_retries(self, attempt: Callable[[], T], method: str, url: str, safety: Safety) -> T:
        """Run ``attempt`` under the retry policy of ``safety``."""
        if safety is Safety.NEVER or self.max_attempts <= 1:
            return attempt()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: is_retryable(e, safety)),
            wait=self._wait_time,
            stop=self._should_stop,
            sleep=self.sleep,
            before_sleep=lambda state: self._log_retry(state, method, url),
            reraise=True,
        )
        return retrying(attempt)

    def _wait_time(self, state: tenacity.RetryCallState) -> float:
        """Exponential backoff with jitter, never shorter than the server's Retry-After."""
        ceiling = min(self.backoff_max, self.backoff * 2 ** (state.attempt_number - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        """Stop after ``max_attempts`` or when the next sleep would end past ``retry_timeout``."""
        if state.attempt_number >= self.max_attempts:
            return True
        elapsed = state.seconds_since_start or 0.0
        return elapsed + state.upcoming_sleep > self.retry_timeout

    def _log_retry(self, state: tenacity.RetryCallState, method: str, url: str) -> None:
        """One warning per retry, with the reason (error texts already name method and path)."""
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "%s; retrying in %.1fs (attempt %d of %d)",
            error if error is not None else f"{method} {_path(url)} failed",
            state.upcoming_sleep,
            state.attempt_number + 1,
            self.max_attempts,
        )

    def _attempt(
        self,
        method: str,
        url: str,
        reader: Callable[[requests.Response], T],
        *,
        params: Mapping[str, Any] | None,
        json_body: Any,
        data: Any,
        files: Mapping[str, FileSpec] | None,
        authenticated: bool,
        key: str | None,
    ) -> T:
        """One HTTP exchange: send, map errors, read the body with ``reader``."""
        headers: dict[str, str] = {}
        token = self.token
        if authenticated and token:
            headers["Authorization"] = f"Token {token}"
        path = _path(url)
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                url,
                params=params,
                json=json_body,
                data=data,
                files=files,
                headers=headers,
                timeout=self.timeout,
                stream=True,
                allow_redirects=method == "GET",
                # explicit, because requests lets REQUESTS_CA_BUNDLE override a session's verify=False
                verify=self.session.verify,
            )
        except requests.exceptions.RequestException as error:
            logger.debug("%s %s -> %s after %.1f ms", method, path, type(error).__name__, _ms(started))
            raise map_transport_error(error, method, path, key) from None
        logger.debug("%s %s -> %s in %.1f ms", method, path, response.status_code, _ms(started))
        try:
            if response.status_code >= 400:
                raise error_from_response(response, method, path, key)
            if method != "GET" and 300 <= response.status_code < 400:
                raise exc.InvalidResponse(
                    f"{method} {path}: unexpected redirect {response.status_code} (routes need a trailing '/')",
                    status_code=response.status_code,
                    method=method,
                    url=path,
                )
            try:
                return reader(response)
            except requests.exceptions.RequestException as error:
                raise map_transport_error(error, method, path, key, during_body=True) from None
        finally:
            response.close()

    def _read_json(self, response: requests.Response) -> Any:
        """Parse a JSON body, refusing bodies larger than ``max_json_bytes``."""
        return self._decode_json(self._read_capped(response), response)

    def _decode_json(self, raw: bytes, response: requests.Response) -> Any:
        """Decode a body already read (None when empty), or raise InvalidResponse naming the route."""
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as error:  # RecursionError: absurdly nested JSON
            ctype = response.headers.get("Content-Type", "?")
            declared_json = "json" in ctype.lower() and not isinstance(error, RecursionError)
            raise exc.InvalidResponse(
                f"{response.request.method} {_path(response.url)}: expected JSON, got {ctype} "
                f"({len(raw)} bytes{', unparsable' if declared_json else ''}): {_snippet(raw)}",
                garbled=declared_json,
                status_code=response.status_code,
                method=response.request.method,
                url=_path(response.url),
            ) from None

    def _read_text(self, response: requests.Response) -> str:
        """Decode a text body (capped like JSON)."""
        raw = self._read_capped(response)
        return raw.decode(response.encoding or "utf-8", errors="replace")

    def _read_capped(self, response: requests.Response) -> bytes:
        """Read the whole body, failing clearly past ``max_json_bytes``."""
        cap = self.max_json_bytes
        declared = response.headers.get("Content-Length")
        too_big = exc.InvalidResponse(
            f"{response.request.method} {_path(response.url)}: response body larger than {cap} bytes; "
            "refusing to load it in memory (narrow the query, e.g. with filters or a smaller page_size)",
            status_code=response.status_code,
            method=response.request.method,
            url=_path(response.url),
        )
        if declared and declared.isdigit() and int(declared) > cap:
            raise too_big
        buffer = bytearray()
        for chunk in response.iter_content(_DOWNLOAD_CHUNK):
            buffer += chunk
            if len(buffer) > cap:
                raise too_big
        return bytes(buffer)


# -------------------------------------------------------------------------------------------
# Pure helpers (tested directly)
# -------------------------------------------------------------------------------------------


def is_retryable(error: BaseException, safety: Safety) -> bool:
    """Whether ``error`` may be retried under ``safety`` (see module docstring)."""
    if safety is Safety.NEVER:
        return False
    if isinstance(error, exc.ConnectionError) and error.request_sent is False:
        return error.transient
    if isinstance(error, exc.TooManyRequests):
        return True
    if safety is Safety.CONNECT_ONLY:
        return False
    if isinstance(error, exc.ConnectionError):
        return error.transient
    if isinstance(error, exc.InvalidResponse):
        return error.garbled
    return isinstance(error, (exc.Timeout, exc.GatewayUnavailable, exc.RequestTimeout))


def is_ambiguous(error: exc.SubstraError) -> bool:
    """True when a failed request may nonetheless have been processed by the server."""
    if isinstance(error, exc.ConnectionError):
        return error.request_sent is not False
    return isinstance(error, (exc.Timeout, exc.GatewayUnavailable, exc.RequestTimeout, exc.InvalidResponse))


def map_transport_error(
    error: requests.exceptions.RequestException,
    method: str,
    path: str,
    key: str | None = None,
    *,
    during_body: bool = False,
) -> exc.SubstraError:
    """Turn a ``requests`` exception into ours, telling apart "never sent" from "maybe received"."""
    where = f"{method} {path}"
    common: dict[str, Any] = {"method": method, "url": path, "key": key}
    if isinstance(error, requests.exceptions.SSLError):
        return exc.ConnectionError(f"{where}: TLS error: {error}", request_sent=False, transient=False, **common)
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return exc.ConnectionError(f"{where}: connect timeout: {error}", request_sent=False, **common)
    if isinstance(error, requests.exceptions.ReadTimeout):
        return exc.Timeout(f"{where}: no answer within the read timeout: {error}", **common)
    if isinstance(error, requests.exceptions.ConnectionError):
        if not during_body and _never_connected(error):
            return exc.ConnectionError(f"{where}: cannot connect: {error}", request_sent=False, **common)
        text = "connection lost while reading the answer" if during_body else "connection error"
        return exc.ConnectionError(f"{where}: {text}: {error}", request_sent=True, **common)
    if isinstance(error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return exc.ConnectionError(f"{where}: broken response body: {error}", request_sent=True, **common)
    if isinstance(error, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
        return exc.ConfigurationError(f"{where}: invalid URL: {error}", **common)
    return exc.RequestException(f"{where}: {error}", **common)


def _never_connected(error: requests.exceptions.ConnectionError) -> bool:
    """True when the TCP connection was never established (nothing reached the server)."""
    reason: Any = error.args[0] if error.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))


def error_from_response(response: requests.Response, method: str, path: str, key: str | None = None) -> exc.HTTPError:
    """Build the exception for an error status, with the server's own message."""
    status = response.status_code
    raw = b""
    try:
        for chunk in response.iter_content(64 * 1024):
            raw += chunk
            if len(raw) >= _ERROR_BODY_CAP:
                break
    except requests.exceptions.RequestException:
        pass
    body: Any = None
    try:
        body = json.loads(raw) if raw.strip() else None
    except (ValueError, RecursionError):
        body = None
    message = server_message(body, raw, response.headers.get("Content-Type", ""))
    body_key = body.get("key") if isinstance(body, dict) else None
    if isinstance(body_key, str) and body_key and not body_key.startswith("("):
        key = key or body_key
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    cls = _STATUS_TO_ERROR.get(status, exc.HTTPError)
    text = f"{method} {path} -> {status} {response.reason or ''}".rstrip()
    if key:
        text += f" [key {key}]"
    if message:
        text += f": {message}"
    if retry_after is not None:
        text += f" (Retry-After: {retry_after:g}s)"
    return cls(
        text,
        status_code=status,
        key=key,
        method=method,
        url=path,
        detail=message,
        errors=body,
        retry_after=retry_after,
    )


def server_message(body: Any, raw: bytes = b"", content_type: str = "") -> str:
    """The server's own words: ``detail`` (string or list), DRF field errors, or a text snippet."""
    if isinstance(body, dict):
        if "detail" in body:
            return _flatten(body["detail"])
        return _flatten({k: v for k, v in body.items() if k != "key"}) or _flatten(body)
    if body is not None:
        return _flatten(body)
    if not raw:
        return ""
    if "html" in content_type.lower() or raw.lstrip()[:1] == b"<":
        title = re.search(rb"<title>(.*?)</title>", raw, re.I | re.S)
        return f"(HTML body{': ' + _snippet(title.group(1)) if title else ''})"
    return _snippet(raw)


def _flatten(value: Any) -> str:
    """Readable one-line text for DRF error shapes (nested lists and field dicts)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(_flatten(v) for v in value)
    if isinstance(value, dict):
        parts = []
        for field, inner in value.items():
            text = _flatten(inner)
            parts.append(text if field == "non_field_errors" else f"{field}: {text}")
        return "; ".join(parts)
    return str(value)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._\- ]")


def filename_from_disposition(header: str | None) -> str | None:
    """File name from a Content-Disposition header, reduced to a safe base name (or None)."""
    if not header:
        return None
    match = re.search(r"filename\*\s*=\s*[^']*'[^']*'([^;]+)", header, re.I)
    if match:
        from urllib.parse import unquote

        name = unquote(match.group(1).strip())
    else:
        match = re.search(r'filename\s*=\s*("([^"]*)"|[^;]+)', header, re.I)
        if not match:
            return None
        name = match.group(2) if match.group(2) is not None else match.group(1)
    return sanitize_filename(name)


def sanitize_filename(name: str) -> str | None:
    """Keep only the last path component, with harmless characters; None if nothing usable."""
    name = name.strip().strip("'\"")
    name = re.split(r"[\\/]", name)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip(" ")
    name = name.lstrip(".")
    if not name or name in {".", ".."}:
        return None
    return name[:200]


def safe_join(folder: pathlib.Path | str, name: str) -> pathlib.Path:
    """``folder / name``, refusing names that would land outside ``folder``."""
    base = pathlib.Path(folder).resolve()
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise exc.UnsafePathError(f"refusing file name {name!r}: it would escape {base}")
    target = (base / name).resolve()
    if target.parent != base:
        raise exc.UnsafePathError(f"refusing file name {name!r}: it would escape {base}")
    return target


def _path(url: str) -> str:
    """Path part of a URL (no host, no query) for messages and logs."""
    return urlsplit(url).path or "/"


def _snippet(raw: bytes, limit: int = 200) -> str:
    """Short one-line excerpt of a body for error messages."""
    text = raw.decode("utf-8", errors="replace").strip()
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ms(started: float) -> float:
    """Milliseconds elapsed since ``started`` (a monotonic timestamp)."""
    return (time.monotonic() - started) * 1000
