"""Where a person can look at a Substra asset: the web app's page when its URL is known, else the API.

Both orchestrator faces link to compute plans (Airflow's "See in Substra", Prefect's link
artifact); they build the URL here so that the two point at the same page.
"""

from __future__ import annotations

from urllib.parse import quote


def compute_plan_url(api_url: str, compute_plan_key: str, frontend_url: str | None = None) -> str:
    """The plan's task list in the web app (``<frontend>/compute_plans/<key>/tasks``), else its API resource."""
    key = quote(str(compute_plan_key), safe="")
    if frontend_url and frontend_url.strip():
        return f"{frontend_url.strip().rstrip('/')}/compute_plans/{key}/tasks"
    return f"{api_url.rstrip('/')}/compute_plan/{key}/"
