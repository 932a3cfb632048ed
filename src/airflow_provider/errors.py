"""How Substra errors reach Airflow: failing for good when a retry cannot help.

Airflow retries a task that raises; a refused permission (403 ``OE0102``), model export turned off
on the channel, refused credentials, a request the server refuses as invalid or a function whose
image failed to build (``BUILD_ERROR``) would fail every retry the same way, hours of retry delays later. Those become
``AirflowFailException`` with the cause first in the message; every other error is left as it is
(a transient one is worth Airflow's retries), and so is bad input found before any request: the
``ValueError`` naming the field and the value. The classification is the shared
:func:`substra_flows.exceptions.retry_cannot_help`, so the Prefect face decides the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from substra_flows.exceptions import SpecValidationError, retry_cannot_help

#: trigger event field that carries :func:`retry_cannot_help`'s answer (absent: a retry may help)
RETRY_CANNOT_HELP = "retry_cannot_help"

Result = TypeVar("Result")


def failing_for_good(error: BaseException) -> AirflowFailException | None:
    """The ``AirflowFailException`` to raise instead of ``error`` when a retry cannot help, else None."""
    if isinstance(error, AirflowException):
        return None  # already decided by the operator
    if isinstance(error, SpecValidationError):
        return None  # bad arguments, found before any request: raised as the ValueError naming the field
    cause = retry_cannot_help(error)
    if cause is None:
        return None
    return AirflowFailException(f"{cause}; not retrying. {type(error).__name__}: {error}")


def surfaces_errors(method: Callable[..., Result]) -> Callable[..., Result]:
    """Decorate ``execute`` / ``execute_complete`` / ``poke``: errors a retry cannot fix fail the task for good."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Result:
        try:
            return method(*args, **kwargs)
        except Exception as error:
            final = failing_for_good(error)
            if final is None:
                raise
            raise final from error

    return wrapper


def event_fails_for_good(payload: Mapping[str, Any]) -> AirflowFailException | None:
    """The ``AirflowFailException`` for a trigger event whose error a retry cannot fix, else None."""
    cause = payload.get(RETRY_CANNOT_HELP)
    if not cause:
        return None
    return AirflowFailException(f"{cause}; not retrying. {payload.get('message') or payload.get('status')}")
