"""Federated logistic regression in plain Python: train, aggregate (FedAvg), predict, score.

Also ``fail`` (a deliberate failure, for tests) and ``noop`` (a trivial task, for benchmarks).
Plain Python keeps each task's start-up short: no numpy import.
"""

import json
import math
import sys
from typing import Any

import substratools as tools

EPOCHS = 25  # local epochs per train task: a few, so federated rounds still matter
LEARNING_RATE = 0.5


def _load(path: str) -> Any:
    """Read a JSON asset (model, predictions) written by another task."""
    with open(path) as handle:
        return json.load(handle)


def _save(obj: Any, path: str) -> None:
    """Write a JSON asset: models and predictions stay human-readable and framework-free."""
    with open(path, "w") as handle:
        json.dump(obj, handle)


def _sigmoid(z: float) -> float:
    """Logistic function, clamped for very negative inputs where math.exp would overflow."""
    if z < -60:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def _probability(model: dict[str, Any], row: list[float]) -> float:
    """The model's probability that ``row`` is of class 1."""
    return _sigmoid(model["bias"] + sum(w * x for w, x in zip(model["weights"], row, strict=True)))


def _rows(data: dict[str, Any], function: str) -> tuple[list[list[float]], list[int]]:
    """The opener's rows and labels; an empty dataset is an error, not a division by zero later."""
    features, labels = data["X"], data["y"]
    if not labels or len(features) != len(labels):
        raise ValueError(f"{function}: need a non-empty dataset, got {len(features)} rows and {len(labels)} labels")
    return features, labels


@tools.register
def train(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Full-batch gradient descent from the previous model (or zeros) for a few epochs."""
    features, labels = _rows(inputs["datasamples"], "train")
    n_features = len(features[0])
    start = _load(inputs["model"]) if inputs.get("model") else None
    weights = list(start["weights"]) if start else [0.0] * n_features
    bias = start["bias"] if start else 0.0
    count = len(labels)
    for _ in range(EPOCHS):
        grad_w = [0.0] * n_features
        grad_b = 0.0
        for row, label in zip(features, labels, strict=True):
            error = _sigmoid(bias + sum(w * x for w, x in zip(weights, row, strict=True))) - label
            for j in range(n_features):
                grad_w[j] += error * row[j]
            grad_b += error
        weights = [w - LEARNING_RATE * g / count for w, g in zip(weights, grad_w, strict=True)]
        bias -= LEARNING_RATE * grad_b / count
    _save({"weights": weights, "bias": bias, "n_samples": count}, outputs["model"])


@tools.register
def aggregate(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """FedAvg: the average of the models, weighted by how many samples each was trained on."""
    models = [_load(path) for path in inputs["models"]]
    total = sum(m["n_samples"] for m in models)
    if total <= 0:
        raise ValueError(f"aggregate: the {len(models)} input models were trained on no samples")
    n_features = len(models[0]["weights"])
    weights = [sum(m["weights"][j] * m["n_samples"] for m in models) / total for j in range(n_features)]
    bias = sum(m["bias"] * m["n_samples"] for m in models) / total
    _save({"weights": weights, "bias": bias, "n_samples": total}, outputs["model"])


@tools.register
def predict(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Probability of class 1 for each row."""
    model = _load(inputs["model"])
    _save([_probability(model, row) for row in inputs["datasamples"]["X"]], outputs["predictions"])


@tools.register
def score(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Accuracy of the predictions at a 0.5 threshold."""
    predictions = _load(inputs["predictions"])
    _, labels = _rows(inputs["datasamples"], "score")
    correct = sum(int((p >= 0.5) == bool(y)) for p, y in zip(predictions, labels, strict=True))
    tools.save_performance(correct / len(labels), outputs["performance"])


@tools.register
def fail(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Fails on purpose, leaving a recognizable line in the task's logs."""
    print("substra-flows example: deliberate failure", file=sys.stderr, flush=True)
    raise RuntimeError("deliberate failure for tests")


@tools.register
def noop(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Does nothing but write a tiny model: a task whose cost is the platform's own overhead."""
    _save({"noop": True}, outputs["model"])


if __name__ == "__main__":
    tools.execute()
