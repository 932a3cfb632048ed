"""Functions: archive upload, rename, reads."""

from __future__ import annotations

import json
import pathlib
import tarfile
import zipfile
from typing import Union

from substra_flows import exceptions as exc
from substra_flows import models, schemas
from substra_flows.client._core import ClientCore, _key_of
from substra_flows.transport import Safety


class FunctionMethods(ClientCore):
    """Functions."""

    # -- functions ---------------------------------------------------------------------------

    def add_function(self, data: Union[dict, schemas.FunctionSpec]) -> str:
        """Register a function (archive with a Dockerfile + description); return its key."""
        spec = self._spec(schemas.FunctionSpec, data)
        if not (zipfile.is_zipfile(spec.file) or _is_tarfile(spec.file)):
            raise exc.LoadDataException.for_field("file", str(spec.file), "is neither a zip nor a tar archive")
        with spec.file.open("rb") as archive, spec.description.open("rb") as desc:
            body = self._transport.request_json(
                "POST",
                self._transport.url("function"),
                data={"json": json.dumps(spec.to_wire())},
                files={
                    "file": (spec.file.name, archive, "application/octet-stream"),
                    "description": (spec.description.name, desc, "text/markdown"),
                },
                safety=Safety.CONNECT_ONLY,
                creates=f"function {spec.name!r}",
            )
        return _key_of(body, "POST /function/")

    def update_function(self, key: str, name: str) -> None:
        """Rename a function."""
        self._update("function", key, self._spec(schemas.UpdateFunctionSpec, {"name": name}))

    def get_function(self, key: str) -> models.Function:
        """``GET /function/{key}/``."""
        return self._get("function", key, self._models.Function)


    def list_function(
        self,
        filters: dict | None = None,
        ascending: bool = False,
        *,
        order_by: str | None = "creation_date",
        page_size: int | None = None,
    ) -> list[models.Function]:
        """List functions (filters: key, name, owner, compute_plan_key)."""
        return self._list("function", self._models.Function, filters, order_by, ascending, page_size)


def _is_tarfile(path: pathlib.Path) -> bool:
    """tarfile.is_tarfile without raising on unreadable files."""
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


