"""Logistic regression in plain Python, shared by the 0.x example archives (each archive ships a copy).

A composite model is a shared *trunk* (weights and bias, averaged across organizations) and a
local *head* (a bias offset that stays on its organization).
"""

import json
import math
from typing import Any, Optional

EPOCHS = 20
LEARNING_RATE = 0.5


def load(path: str) -> Any:
    """Read a JSON model or predictions file."""
    with open(path) as handle:
        return json.load(handle)


def save(obj: Any, path: str) -> None:
    """Write a JSON model or predictions file."""
    with open(path, "w") as handle:
        json.dump(obj, handle)


def sigmoid(z: float) -> float:
    """Logistic function, clamped where math.exp would overflow."""
    if z < -60:
        return 0.0
    return 1.0 / (1.0 + math.exp(-z))


def score_row(trunk: dict, offset: float, row: list) -> float:
    """The model's probability of class 1 for one row."""
    return sigmoid(trunk["bias"] + offset + sum(w * x for w, x in zip(trunk["weights"], row, strict=True)))


def average(models: list) -> dict:
    """FedAvg: trunks averaged, weighted by the samples each saw."""
    total = sum(m["n_samples"] for m in models)
    if total <= 0:
        raise ValueError(f"average: the {len(models)} models saw no sample")
    size = len(models[0]["weights"])
    weights = [sum(m["weights"][j] * m["n_samples"] for m in models) / total for j in range(size)]
    return {"weights": weights, "bias": sum(m["bias"] * m["n_samples"] for m in models) / total, "n_samples": total}


def fit(data: dict, trunk: Optional[dict], offset: Optional[float], train_offset: bool) -> tuple:
    """Full-batch gradient descent from ``trunk`` (or zeros) for a few epochs; returns (trunk, offset)."""
    features, labels = data["X"], data["y"]
    if not labels:
        raise ValueError("fit: no training row")
    size = len(features[0])
    weights = list(trunk["weights"]) if trunk else [0.0] * size
    bias = trunk["bias"] if trunk else 0.0
    shift = offset or 0.0
    count = len(labels)
    for _ in range(EPOCHS):
        grad_w = [0.0] * size
        grad_b = 0.0
        for row, label in zip(features, labels, strict=True):
            error = sigmoid(bias + shift + sum(w * x for w, x in zip(weights, row, strict=True))) - label
            for j in range(size):
                grad_w[j] += error * row[j]
            grad_b += error
        weights = [w - LEARNING_RATE * g / count for w, g in zip(weights, grad_w, strict=True)]
        bias -= LEARNING_RATE * grad_b / count
        if train_offset:
            shift -= LEARNING_RATE * grad_b / count
    return {"weights": weights, "bias": bias, "n_samples": count}, shift


def predict_file(model_path: str, rows: list, predictions_path: str) -> None:
    """Write the probabilities of class 1 of ``rows`` with the trunk (or plain model) at ``model_path``."""
    model = load(model_path)
    save([score_row(model, 0.0, row) for row in rows], predictions_path)
