"""A numpy-only substrafl algorithm for the substrafl test: logistic regression trained by full-batch
gradient descent, federated with FedAvg. Deterministic (zero start, fixed steps), so two runs on the
same data give the same weights to the last bit. Pickled by value, so task processes need not
import this module."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Optional

import numpy as np
from substrafl.algorithms import Algo
from substrafl.remote import remote_data
from substrafl.strategies.schemas import FedAvgAveragedState, FedAvgSharedState, StrategyName

N_FEATURES = 2


def _features(data_from_opener: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The opener's ``{"X": rows, "y": labels}`` as arrays."""
    return np.asarray(data_from_opener["X"], dtype=np.float64), np.asarray(data_from_opener["y"], dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


class NumpyLogisticRegression(Algo):
    """Weights and bias in numpy arrays; ``train`` returns the update FedAvg averages."""

    def __init__(self, learning_rate: float = 0.5, local_steps: int = 10) -> None:
        super().__init__(learning_rate=learning_rate, local_steps=local_steps)
        self.learning_rate = learning_rate
        self.local_steps = local_steps
        self.weights = np.zeros(N_FEATURES)
        self.bias = np.zeros(1)

    @property
    def model(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights, "bias": self.bias}

    @property
    def strategies(self) -> list[StrategyName]:
        return [StrategyName.FEDERATED_AVERAGING]

    def activation(self, z: np.ndarray) -> np.ndarray:
        """The logistic function (a subclass may take it from a dependency)."""
        return _sigmoid(z)

    @remote_data
    def train(self, data_from_opener: Any, shared_state: Optional[FedAvgAveragedState] = None) -> FedAvgSharedState:
        """Apply the averaged update of the last round, then take local steps; return their delta."""
        if shared_state is not None:
            self.weights = self.weights + shared_state.avg_parameters_update[0]
            self.bias = self.bias + shared_state.avg_parameters_update[1]
        x, y = _features(data_from_opener)
        weights, bias = self.weights.copy(), self.bias.copy()
        for _ in range(self.local_steps):
            error = self.activation(x @ weights + bias[0]) - y
            weights -= self.learning_rate * (x.T @ error) / len(y)
            bias -= self.learning_rate * np.array([error.mean()])
        # the kept model stays the global one; only the update travels (as substrafl's own FedAvg algos do)
        return FedAvgSharedState(n_samples=len(y), parameters_update=[weights - self.weights, bias - self.bias])

    def predict(self, data_from_opener: Any, shared_state: Any = None) -> np.ndarray:
        """Probabilities of class 1 (called by the strategy's evaluate, inside the test task)."""
        x, _ = _features(data_from_opener)
        return self.activation(x @ self.weights + self.bias[0])

    def save_local_state(self, path: Path) -> None:
        with Path(path).open("wb") as handle:
            pickle.dump({"weights": self.weights, "bias": self.bias}, handle)

    def load_local_state(self, path: Path) -> NumpyLogisticRegression:
        with Path(path).open("rb") as handle:
            state = pickle.load(handle)
        self.weights, self.bias = state["weights"], state["bias"]
        return self


def accuracy(data_from_opener: Any, predictions: np.ndarray) -> float:
    """Share of test samples classified right (threshold 0.5)."""
    _, y = _features(data_from_opener)
    return float(np.mean((np.asarray(predictions) > 0.5) == (y > 0.5)))


class HelperLogisticRegression(NumpyLogisticRegression):
    """The same model, whose logistic function comes from the ``fedavg_helpers`` package: imported inside
    the task, at run time, so only a function whose image installed that package can train or predict."""

    def activation(self, z: np.ndarray) -> np.ndarray:
        import fedavg_helpers  # the experiment's declared dependency, installed by the build phase

        return np.asarray(fedavg_helpers.sigmoid(z))
