"""Opener of the example datasets: each data sample is a folder holding ``data.csv`` (x1, x2, ..., y).

Plain Python (no numpy, no pandas) so that a task's start-up stays short.
"""

import csv
import os
import random
from typing import Any, Optional

import substratools as tools

LABEL_COLUMN = "y"
DATA_FILE = "data.csv"
DEFAULT_FAKE_SAMPLES = 10


def _read_sample(path: str) -> tuple[list[str], list[list[float]], list[int]]:
    """One ``data.csv``: its feature names (header order), its feature rows and its 0/1 labels."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or LABEL_COLUMN not in header:
            raise ValueError(f"{path}: expected a header with a {LABEL_COLUMN!r} column, got {header!r}")
        label_at = header.index(LABEL_COLUMN)
        feature_at = [i for i, name in enumerate(header) if name != LABEL_COLUMN]
        features, labels = [], []
        for row in reader:
            if not row:
                continue
            labels.append(int(row[label_at]))
            features.append([float(row[i]) for i in feature_at])
    return [header[i] for i in feature_at], features, labels


class CsvOpener(tools.Opener):
    """Loads every sample folder's ``data.csv`` into ``{"X": rows of floats, "y": labels}``."""

    def get_data(self, folders: list[str]) -> dict[str, Any]:
        """Concatenate the samples in sorted folder order, so the same folders always give the same rows."""
        features: list[list[float]] = []
        labels: list[int] = []
        columns: Optional[list[str]] = None
        for folder in sorted(folders):
            path = os.path.join(folder, DATA_FILE)
            names, rows, ys = _read_sample(path)
            if columns is None:
                columns = names
            elif names != columns:
                raise ValueError(f"{path}: feature columns {names} differ from {columns}")
            features.extend(rows)
            labels.extend(ys)
        return {"X": features, "y": labels}

    def fake_data(self, n_samples: Optional[int] = None) -> dict[str, Any]:
        """Deterministic stand-in data of the same shape (2 features, 0/1 labels), for fake-data runs."""
        count = DEFAULT_FAKE_SAMPLES if n_samples is None else n_samples
        rng = random.Random(count)
        features = [[rng.uniform(-2.0, 2.0), rng.uniform(-2.0, 2.0)] for _ in range(count)]
        return {"X": features, "y": [int(x1 + x2 > 0) for x1, x2 in features]}
