"""A 0.x *algo* written for substratools 1.0: ``train`` and ``predict``.

The 0.x surface registers this archive twice, with ``--function-name train`` and ``predict`` on
its ENTRYPOINT; the inputs and outputs are the ones a 0.x algo implied.
"""

from typing import Any

import logreg
import substratools as tools


@tools.register
def train(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Train from the average of the input models (``models``, none for a first traintuple)."""
    start = logreg.average([logreg.load(p) for p in inputs["models"]]) if inputs.get("models") else None
    trunk, _ = logreg.fit(inputs["datasamples"], start, None, train_offset=False)
    logreg.save(trunk, outputs["model"])


@tools.register
def predict(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Probabilities of class 1 with ``model``."""
    logreg.predict_file(inputs["model"], inputs["datasamples"]["X"], outputs["predictions"])


if __name__ == "__main__":
    tools.execute()
