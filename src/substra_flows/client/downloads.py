"""Files: openers, function archives, models, logs and descriptions, streamed to disk or read as text."""

from __future__ import annotations

import os
import pathlib

from substra_flows import exceptions as exc
from substra_flows.client.datasets import DatasetMethods
from substra_flows.client.results import ResultMethods
from substra_flows.schemas import check_key
from substra_flows.transport import safe_join


class DownloadMethods(ResultMethods, DatasetMethods):
    """Downloads and descriptions."""

    # -- files -----------------------------------------------------------------------------------

    def download_dataset(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """Save the dataset's opener as ``opener.py`` in the folder."""
        dataset = self.get_dataset(key)
        return self._download(dataset.opener.storage_address, destination_folder, "opener.py")

    def download_function(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """Save the function's archive as ``function.tar.gz`` in the folder."""
        function = self.get_function(key)
        return self._download(function.archive.storage_address, destination_folder, "function.tar.gz")

    def download_model(self, key: str, destination_folder: str | os.PathLike[str]) -> pathlib.Path:
        """Save a model as ``model_<key>`` in the folder.

        A download by an end user is an export: a deployment whose channel leaves
        ``model_export_enabled`` off (the official Helm chart's default) refuses it with 403, raised
        here as :class:`~substra_flows.exceptions.ModelExportDisabled`.
        """
        key = check_key(key, "key")
        try:
            return self._download(self._transport.url("model", key, "file"), destination_folder, f"model_{key}")
        except exc.AuthorizationError as error:
            raise self._export_refusal(key, error) from None

    def download_model_from_task(self, task_key: str, identifier: str, folder: str | os.PathLike[str]) -> pathlib.Path:
        """Save the model a task produced under ``identifier``."""
        output = self.get_task_output_asset(task_key, identifier)
        if not isinstance(output.asset, self._models.Model):
            raise exc.SpecValidationError.for_field(
                "identifier", identifier, f"output of task {task_key} is a {output.kind}, not a model"
            )
        return self.download_model(output.asset.key, folder)

    def _export_refusal(self, key: str, error: exc.AuthorizationError) -> exc.AuthorizationError:
        """The 403 of a model download, named after the channel setting when that is the cause."""
        try:
            enabled = self.organization_info().config.model_export_enabled
        except exc.SubstraError:
            enabled = None
        if enabled is not False and "model_export_enabled" not in str(error.detail or ""):
            return error
        return exc.ModelExportDisabled(
            f"model {key} cannot be downloaded: model export is disabled on this organization's channel "
            "(the channel setting model_export_enabled is false; the Helm chart's default). Ask the "
            f"deployment's administrators to enable it, or keep the model inside Substra. Server said: {error.detail}",
            status_code=error.status_code,
            key=key,
            method=error.method,
            url=error.url,
            detail=error.detail,
        )

    def download_logs(self, task_key: str, folder: str | os.PathLike[str]) -> str:
        """Save a failed task's logs as ``task_logs_<key>.txt``; return the file path."""
        task_key = check_key(task_key, "task_key")
        url = self._transport.url("task", task_key, "logs")
        return str(self._download(url, folder, f"task_logs_{task_key}.txt"))

    def get_logs(self, task_key: str) -> str:
        """A failed task's logs as text (410 when the task has none)."""
        task_key = check_key(task_key, "task_key")
        return self._transport.request_text("GET", self._transport.url("task", task_key, "logs"), key=task_key)

    def describe_dataset(self, key: str) -> str:
        """The dataset's Markdown description."""
        dataset = self.get_dataset(key)
        return self._transport.request_text("GET", self._transport.rebase(dataset.description.storage_address))

    def describe_function(self, key: str) -> str:
        """The function's Markdown description."""
        function = self.get_function(key)
        return self._transport.request_text("GET", self._transport.rebase(function.description.storage_address))

    def _download(self, url: str, folder: str | os.PathLike[str], name: str) -> pathlib.Path:
        """Stream ``url`` into ``folder/name``, refusing names that leave the folder."""
        if not url:
            raise exc.InvalidResponse("the asset has no download address (file deleted or not exported)")
        target = safe_join(pathlib.Path(folder), name)
        return self._transport.download(self._transport.rebase(url), target)
