"""The "See in Substra" extra link of tasks that submit or watch a compute plan.

The URL is computed while the task runs (the hook knows the frontend URL, or the API URL) and
stored in XCom; the link itself only reads XCom, so the web server never needs the connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

#: XCom key of the compute plan's URL
URL_XCOM_KEY = "compute_plan_url"
#: XCom key of the compute plan's key
KEY_XCOM_KEY = "compute_plan_key"


class SubstraComputePlanLink(BaseOperatorLink):
    """Link to the compute plan a task submitted or watched."""

    name = "See in Substra"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The URL the task stored in XCom, or "" before it stored one."""
        value: Any = XCom.get_value(ti_key=ti_key, key=URL_XCOM_KEY)
        return value if isinstance(value, str) else ""

    @classmethod
    def persist(cls, context: Context, *, compute_plan_key: str, url: str) -> None:
        """Store the plan key and its URL in XCom (also under the link's own key, so the UI shows
        the link while the task is still waiting or deferred)."""
        ti = context["ti"]
        ti.xcom_push(key=KEY_XCOM_KEY, value=compute_plan_key)
        ti.xcom_push(key=URL_XCOM_KEY, value=url)
        ti.xcom_push(key=cls().xcom_key, value=url)
