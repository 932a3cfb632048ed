"""Datasets and data samples: registration (opener upload, zipped sample folders), links, reads."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pathlib
import zipfile
from collections.abc import Mapping
from typing import Any, Union

from substra_flows import exceptions as exc
from substra_flows import models, schemas
from substra_flows.client._core import ClientCore, _key_of
from substra_flows.schemas import check_key
from substra_flows.transport import Safety

logger = logging.getLogger("substra_flows")

GENERATED_DESCRIPTION = b"""# No description given

This dataset was registered without a description file.
"""


class DatasetMethods(ClientCore):
    """Datasets and data samples."""

    # -- datasets and data samples ---------------------------------------------------------

    def add_dataset(self, data: Union[dict, schemas.DatasetSpec]) -> str:
        """Register a dataset (opener + description); return its key (server-chosen)."""
        spec = self._spec(schemas.DatasetSpec, data)
        with contextlib.ExitStack() as stack:
            opener = stack.enter_context(spec.data_opener.open("rb"))
            files: dict[str, Any] = {"data_opener": (spec.data_opener.name, opener, "text/x-python")}
            if spec.description is not None:
                desc = stack.enter_context(spec.description.open("rb"))
                files["description"] = (spec.description.name, desc, "text/markdown")
            else:
                files["description"] = ("description.md", io.BytesIO(GENERATED_DESCRIPTION), "text/markdown")
            body = self._transport.request_json(
                "POST",
                self._transport.url("data_manager"),
                data={"json": json.dumps(spec.to_wire())},
                files=files,
                safety=Safety.CONNECT_ONLY,
                creates=f"dataset {spec.name!r}",
            )
        return _key_of(body, "POST /data_manager/")

    def add_data_sample(self, data: Union[dict, schemas.DataSampleSpec], local: bool = True) -> str:
        """Register one sample folder (``path``); return its key."""
        spec = self._spec(schemas.DataSampleSpec, data)
        if spec.paths:
            raise exc.SpecValidationError.for_field("paths", spec.paths, "use add_data_samples for several folders")
        return self._add_samples(spec, local)[0]

    def add_data_samples(self, data: Union[dict, schemas.DataSampleSpec], local: bool = True) -> list[str]:
        """Register several sample folders (``paths``) in one request; return their keys.

        The server does not promise to return keys in the order of ``paths``.
        """
        spec = self._spec(schemas.DataSampleSpec, data)
        if spec.path is not None:
            raise exc.SpecValidationError.for_field("path", spec.path, "use add_data_sample for one folder")
        return self._add_samples(spec, local)

    def _add_samples(self, spec: schemas.DataSampleSpec, local: bool) -> list[str]:
        """Upload zipped folders (local=True) or send server-side paths (local=False)."""
        folders = spec.folders()
        field = "paths" if spec.is_many() else "path"
        what = f"data sample(s) for dataset(s) {spec.data_manager_keys}"
        if local:
            files: dict[str, Any] = {}
            for i, folder in enumerate(folders):
                where = f"{field}.{i}" if spec.is_many() else field
                if not folder.is_dir():
                    raise exc.LoadDataException.for_field(where, str(folder), "is not an existing directory")
                part = "path" if not spec.is_many() else _unique_part_name(folder.name or "sample", files)
                files[part] = (f"{part}.zip", zip_folder(folder, bool(spec.followlinks), where), "application/zip")
            body = self._transport.request_json(
                "POST",
                self._transport.url("data_sample"),
                data={"json": json.dumps({"data_manager_keys": spec.data_manager_keys})},
                files=files,
                safety=Safety.CONNECT_ONLY,
                creates=what,
            )
        else:
            payload: dict[str, Any] = {"data_manager_keys": spec.data_manager_keys}
            resolved = [str(pathlib.Path(f).resolve()) for f in folders]
            if spec.is_many():
                payload["paths"] = resolved
            else:
                payload["path"] = resolved[0]
            body = self._transport.request_json(
                "POST",
                self._transport.url("data_sample"),
                json_body=payload,
                safety=Safety.CONNECT_ONLY,
                creates=what,
            )
        items = body if isinstance(body, list) else [body]
        keys = [_key_of(item, "POST /data_sample/") for item in items]
        if len(keys) != len(folders):
            logger.warning("sent %d sample folder(s) but the server returned %d key(s)", len(folders), len(keys))
        return keys

    def link_dataset_with_data_samples(self, dataset_key: str, data_sample_keys: list[str]) -> list[str]:
        """Attach samples to a dataset (links only ever merge, so this is safe to repeat)."""
        dataset_key = check_key(dataset_key, "dataset_key")
        keys = [check_key(k, f"data_sample_keys.{i}") for i, k in enumerate(data_sample_keys)]
        if not keys:
            raise exc.SpecValidationError.for_field("data_sample_keys", data_sample_keys, "must not be empty")
        self._transport.request_json(
            "POST",
            self._transport.url("data_sample", "bulk_update"),
            data={"data_manager_keys": [dataset_key], "data_sample_keys": keys},
            safety=Safety.SAFE,
            key=dataset_key,
        )
        return keys

    def update_dataset(self, key: str, name: str) -> None:
        """Rename a dataset (applied asynchronously by the server)."""
        self._update("data_manager", key, self._spec(schemas.UpdateDatasetSpec, {"name": name}))

    def get_dataset(self, key: str) -> models.Dataset:
        """``GET /data_manager/{key}/``."""
        return self._get("data_manager", key, self._models.Dataset)

    def get_data_sample(self, key: str) -> models.DataSample:
        """``GET /data_sample/{key}/``."""
        return self._get("data_sample", key, self._models.DataSample)


    def list_dataset(
        self,
        filters: dict | None = None,
        ascending: bool = False,
        *,
        order_by: str | None = "creation_date",
        page_size: int | None = None,
    ) -> list[models.Dataset]:
        """List datasets (filters: key, name, owner, data_sample_key)."""
        return self._list("data_manager", self._models.Dataset, filters, order_by, ascending, page_size)

    def list_data_sample(
        self,
        filters: dict | None = None,
        ascending: bool = False,
        *,
        order_by: str | None = "creation_date",
        page_size: int | None = None,
    ) -> list[models.DataSample]:
        """List data samples (filters: key, owner, dataset_key)."""
        return self._list("data_sample", self._models.DataSample, filters, order_by, ascending, page_size)


def zip_folder(folder: pathlib.Path, followlinks: bool = False, field: str = "path") -> io.BytesIO:
    """Zip a sample folder in memory (paths relative to it, sorted for reproducible archives)."""
    buffer = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(folder, followlinks=followlinks):
            dirs.sort()
            for name in sorted(files):
                full = pathlib.Path(root) / name
                archive.write(full, arcname=full.relative_to(folder).as_posix())
                count += 1
    if count == 0:
        raise exc.LoadDataException.for_field(field, str(folder), "holds no file (the server refuses empty samples)")
    buffer.seek(0)
    return buffer


def _unique_part_name(name: str, taken: Mapping[str, Any]) -> str:
    """Multipart part name for a folder; folders sharing a base name get a suffix (the SDK
    silently dropped all but one)."""
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


