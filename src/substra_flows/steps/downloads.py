"""Download a plan's model: the promote step of a pipeline.

One function for both faces, so that the Airflow operator and the Prefect task check their
arguments and name a refused export the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from substra_flows import exceptions as exc


def download_model(
    client: Any,
    destination_folder: Union[str, Path],
    *,
    model_key: Optional[str] = None,
    task_key: Optional[str] = None,
    identifier: str = "model",
) -> str:
    """Save a model in ``destination_folder`` (created if needed), by ``model_key`` or as the output
    ``identifier`` of ``task_key``; return the file path.

    Exactly one key is required, checked before any request. On a deployment whose channel keeps
    ``model_export_enabled`` off (the Helm chart's default) this raises
    :class:`~substra_flows.exceptions.ModelExportDisabled`, naming that setting.
    """
    if (model_key is None) == (task_key is None):
        raise exc.SpecValidationError.for_field(
            "model_key", model_key, f"give exactly one of model_key and task_key (task_key={task_key!r})"
        )
    if not identifier:
        raise exc.SpecValidationError.for_field("identifier", identifier, "must be a non-empty output identifier")
    folder = Path(destination_folder)
    folder.mkdir(parents=True, exist_ok=True)
    if model_key is not None:
        return str(client.download_model(model_key, folder))
    return str(client.download_model_from_task(task_key, identifier, folder))
