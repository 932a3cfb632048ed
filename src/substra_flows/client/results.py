"""What tasks produced: input and output assets, and a plan's performances."""

from __future__ import annotations

from substra_flows import exceptions as exc
from substra_flows import models
from substra_flows.client.pages import page_parser
from substra_flows.client.waits import WaitMethods
from substra_flows.schemas import check_key


class ResultMethods(WaitMethods):
    """Task assets and performances."""

    # -- task assets ----------------------------------------------------------------------------

    def list_task_input_assets(self, key: str) -> list[models.InputAsset]:
        """Inputs of a task (datasets, samples, models)."""
        key = check_key(key, "key")
        return self._transport.list_all(
            self._transport.url("task", key, "input_assets"),
            params={"page_size": str(self._page_size(None))},
            parse_page=page_parser(self._models.InputAsset, f"GET /task/{key}/input_assets/"),
        )

    def list_task_output_assets(self, key: str, *, wait_completion: bool = False) -> list[models.OutputAsset]:
        """Outputs of a task (models; performances as floats)."""
        key = check_key(key, "key")
        if wait_completion:
            self.wait_task(key)
        return self._output_assets(key, None)

    def get_task_output_asset(self, key: str, identifier: str, *, wait_completion: bool = False) -> models.OutputAsset:
        """The one output of a task with this identifier."""
        key = check_key(key, "key")
        if wait_completion:
            self.wait_task(key)
        outputs = self._output_assets(key, identifier)
        if not outputs:
            raise exc.TaskAssetNotFoundError(key, identifier)
        if len(outputs) > 1:
            raise exc.TaskAssetMultipleFoundError(key, identifier)
        return outputs[0]

    def _output_assets(self, key: str, identifier: str | None) -> list[models.OutputAsset]:
        """GET the output assets, filtered by identifier (also client-side: bad values are ignored
        by the server)."""
        params = {"page_size": str(self._page_size(None))}
        if identifier is not None:
            params["identifier"] = identifier
        outputs: list[models.OutputAsset] = self._transport.list_all(
            self._transport.url("task", key, "output_assets"),
            params=params,
            parse_page=page_parser(self._models.OutputAsset, f"GET /task/{key}/output_assets/"),
        )
        if identifier is not None:
            outputs = [o for o in outputs if o.identifier == identifier]
        return outputs

    # -- performances ---------------------------------------------------------------------------

    def get_performances(self, key: str, *, wait_completion: bool = False) -> models.Performances:
        """All performances of a plan, column-oriented (``.rows()`` for row dicts)."""
        key = check_key(key, "key")
        if wait_completion:
            self.wait_compute_plan(key)
        plan = self.get_compute_plan(key)
        body = self._transport.request_json("GET", self._transport.url("compute_plan", key, "perf"), key=key)
        results = body.get("results") if isinstance(body, dict) else body
        if not isinstance(results, list):
            raise exc.InvalidResponse(f"GET /compute_plan/{key}/perf/: no 'results' list", key=key)
        return models.Performances.from_server(plan, results)
