"""A 0.x *composite algo* written for substratools 1.0: ``train`` and ``predict`` over head and trunk.

The head model (``local``) is a bias offset that never leaves its organization; the trunk
(``shared``) holds the weights that the aggregate algo averages.
"""

from typing import Any

import logreg
import substratools as tools


@tools.register
def train(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Train head and trunk from the in models (none for the first round)."""
    head = logreg.load(inputs["local"]) if inputs.get("local") else None
    trunk = logreg.load(inputs["shared"]) if inputs.get("shared") else None
    new_trunk, offset = logreg.fit(inputs["datasamples"], trunk, head["offset"] if head else None, train_offset=True)
    logreg.save({"offset": offset}, outputs["local"])
    logreg.save(new_trunk, outputs["shared"])


@tools.register
def predict(inputs: dict[str, Any], outputs: dict[str, Any], task_properties: dict[str, Any]) -> None:
    """Probabilities of class 1 with this organization's head and the trunk."""
    offset = logreg.load(inputs["local"])["offset"]
    trunk = logreg.load(inputs["shared"])
    rows = inputs["datasamples"]["X"]
    logreg.save([logreg.score_row(trunk, offset, row) for row in rows], outputs["predictions"])


if __name__ == "__main__":
    tools.execute()
