"""Airflow provider for Substra: a ``substra`` connection type, operators, sensors, triggers and a link.

Airflow finds it through the ``apache_airflow_provider`` entry point, which calls
:func:`get_provider_info`. This module imports nothing from Airflow so that discovery stays cheap.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

PACKAGE_NAME = "substra-flows"  # the distribution name: Airflow insists that they match
INTEGRATION = "Substra"
CONN_TYPE = "substra"

_MODULE = "airflow_provider"


def _conn_fields() -> dict[str, dict[str, Any]]:
    """Extra fields of the connection form (stored as plain keys of the connection's ``extra``)."""

    def field(label: str, kind: str, description: str, default: Any = None) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": [kind, "null"]}
        if default is not None:
            schema["default"] = default
        return {"label": label, "schema": schema, "description": description}

    return {
        "frontend_url": field(
            "Frontend URL",
            "string",
            "URL of the Substra web app; the 'See in Substra' link points there (else to the API URL).",
        ),
        "insecure": field("Skip TLS verification", "boolean", "Do not verify the server's TLS certificate.", False),
        "connect_timeout": field("Connect timeout (s)", "number", "Seconds to establish a connection.", 10),
        "read_timeout": field("Read timeout (s)", "number", "Seconds to wait for an answer.", 120),
        "retry_timeout": field(
            "Retry budget (s)", "number", "Seconds a call may spend retrying transient errors.", 300
        ),
        "max_attempts": field("Max attempts", "integer", "Attempts per call on transient errors.", 6),
        "backoff": field("Backoff (s)", "number", "First retry delay, doubled at each attempt (with jitter).", 1),
        "backoff_max": field("Max backoff (s)", "number", "Upper bound of a retry delay.", 30),
        "total_timeout": field(
            "Total timeout (s)",
            "number",
            "Seconds one HTTP exchange may last in all, connect and every read (0: socket timeouts only).",
            600,
        ),
        "max_download_bytes": field(
            "Max download (bytes)", "integer", "Largest file a download may write (0: no limit).", 8 * 1024**3
        ),
    }


def get_provider_info() -> dict[str, Any]:
    """What Airflow needs to list this provider: connection type, hook, operators, sensors, triggers, links."""
    integration = [INTEGRATION]
    return {
        "package-name": PACKAGE_NAME,
        "name": "Substra",
        "description": "`Substra <https://docs.substra.org>`__: federated learning compute plans from Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://docs.substra.org",
                "tags": ["service"],
            }
        ],
        "operators": [{"integration-name": i, "python-modules": [f"{_MODULE}.operators.substra"]} for i in integration],
        "sensors": [{"integration-name": i, "python-modules": [f"{_MODULE}.sensors.substra"]} for i in integration],
        "hooks": [{"integration-name": i, "python-modules": [f"{_MODULE}.hooks.substra"]} for i in integration],
        "triggers": [{"integration-name": i, "python-modules": [f"{_MODULE}.triggers.substra"]} for i in integration],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": f"{_MODULE}.hooks.substra.SubstraHook",
                "hook-name": "Substra",
                "conn-fields": _conn_fields(),
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "extra"],
                    "relabeling": {"host": "Substra API URL", "login": "Username", "password": "API token or password"},
                    "placeholders": {
                        "host": "https://substra-backend.org-1.example.org",
                        "login": "leave empty when the password field holds an API token",
                        "password": "API token (or the user's password when a username is given)",
                        "frontend_url": "https://substra.org-1.example.org",
                    },
                },
            }
        ],
        "extra-links": [f"{_MODULE}.links.substra.SubstraComputePlanLink"],
    }
