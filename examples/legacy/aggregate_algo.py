"""A 0.x *aggregate algo* written for substratools 1.0: ``aggregate`` (FedAvg) and ``predict``."""

from typing import Any

import logreg
import substratools as tools


@tools.register
def aggregate(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """The sample-weighted average of the input models (trunks, for composite traintuples)."""
    logreg.save(logreg.average([logreg.load(p) for p in inputs["models"]]), outputs["model"])


@tools.register
def predict(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Probabilities of class 1 with the aggregated ``model``."""
    logreg.predict_file(inputs["model"], inputs["datasamples"]["X"], outputs["predictions"])


if __name__ == "__main__":
    tools.execute()
