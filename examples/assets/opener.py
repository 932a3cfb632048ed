"""Opener of the example datasets: each data sample is a folder holding ``data.csv`` (x1, x2, ..., y)."""

import csv
import os
import random
from typing import Any

import substratools as tools


class CsvOpener(tools.Opener):
    """Loads every sample folder's ``data.csv`` into ``{"X": rows of floats, "y": labels}``."""

    def get_data(self, folders: list[str]) -> dict[str, Any]:
        features, labels = [], []
        for folder in sorted(folders):
            with open(os.path.join(folder, "data.csv"), newline="") as handle:
                for row in csv.DictReader(handle):
                    labels.append(int(row.pop("y")))
                    features.append([float(row[name]) for name in sorted(row)])
        return {"X": features, "y": labels}

    def fake_data(self, n_samples: int) -> dict[str, Any]:
        rng = random.Random(n_samples)
        features = [[rng.uniform(-2, 2), rng.uniform(-2, 2)] for _ in range(n_samples)]
        return {"X": features, "y": [int(x1 + x2 > 0) for x1, x2 in features]}
