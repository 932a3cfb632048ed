"""substra-flows for Prefect: a credentials block, one task per Substra step, and ready-made flows.

Registered through the ``prefect.collections`` entry point, so ``prefect block register -m
substra_flows.prefect`` finds :class:`SubstraCredentials`. The core ``substra_flows`` package never
imports Prefect; only this package does.
"""

from substra_flows.prefect.crashes import ensure_zombie_automation, zombie_automation
from substra_flows.prefect.credentials import SubstraCredentials, aresolve_credentials, resolve_credentials
from substra_flows.prefect.flows import (
    cancel_compute_plan_on_cancellation,
    compute_plan_key_for_run,
    leave_plan_running_on_crash,
    run_compute_plan,
)
from substra_flows.prefect.tasks import (
    add_compute_plan,
    add_data_samples,
    add_function,
    async_cancel_compute_plan,
    async_download_model,
    async_get_compute_plan,
    async_get_performances,
    async_get_task,
    async_get_task_logs,
    async_wait_compute_plan,
    async_wait_task,
    cancel_compute_plan,
    download_model,
    evaluate_quality_gate,
    get_compute_plan,
    get_leaderboard,
    get_organization_info,
    get_performances,
    get_task,
    get_task_logs,
    is_transient_error,
    register_dataset,
    retry_on_transient_error,
    wait_compute_plan,
    wait_task,
)

__all__ = [
    "SubstraCredentials",
    "add_compute_plan",
    "add_data_samples",
    "add_function",
    "aresolve_credentials",
    "async_cancel_compute_plan",
    "async_download_model",
    "async_get_compute_plan",
    "async_get_performances",
    "async_get_task",
    "async_get_task_logs",
    "async_wait_compute_plan",
    "async_wait_task",
    "cancel_compute_plan",
    "cancel_compute_plan_on_cancellation",
    "compute_plan_key_for_run",
    "download_model",
    "ensure_zombie_automation",
    "evaluate_quality_gate",
    "get_compute_plan",
    "get_leaderboard",
    "get_organization_info",
    "get_performances",
    "get_task",
    "get_task_logs",
    "is_transient_error",
    "leave_plan_running_on_crash",
    "register_dataset",
    "resolve_credentials",
    "retry_on_transient_error",
    "run_compute_plan",
    "wait_compute_plan",
    "wait_task",
    "zombie_automation",
]
