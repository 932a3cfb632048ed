"""A 0.x *objective*'s metrics written for substratools 1.0: ``score`` (accuracy at 0.5)."""

from typing import Any

import logreg
import substratools as tools


@tools.register
def score(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Share of test rows whose prediction falls on the right side of 0.5."""
    predictions = logreg.load(inputs["predictions"])
    labels = inputs["datasamples"]["y"]
    if len(predictions) != len(labels) or not labels:
        raise ValueError(f"score: {len(predictions)} predictions for {len(labels)} labels")
    correct = sum(int((p >= 0.5) == bool(y)) for p, y in zip(predictions, labels, strict=True))
    tools.save_performance(correct / len(labels), outputs["performance"])


if __name__ == "__main__":
    tools.execute()
