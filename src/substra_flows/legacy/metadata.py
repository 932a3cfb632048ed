"""What the 0.x surface records in 1.0 metadata, and how to read it back.

1.0 has no objectives, no tuple kinds and no ``test_only`` flag; the legacy client writes what it
needs to answer 0.x questions into the metadata of the 1.0 assets it creates, under keys starting
with ``legacy_``. Users' own metadata may not use that prefix (it would be ambiguous on reading).
Values are at most 100 characters on the server, so key lists are split over numbered keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from substra_flows.legacy.exceptions import LegacyTranslationError

PREFIX = "legacy_"
KIND = "legacy_kind"
CHECKSUM = "legacy_checksum"
PREDICT_KEY = "legacy_predict_key"
METRICS_NAME = "legacy_metrics_name"
METRICS_CHECKSUM = "legacy_metrics_checksum"
TEST_DATASET = "legacy_test_dataset"
TEST_SAMPLES = "legacy_test_samples"
DATASET_TYPE = "legacy_type"
OBJECTIVE_KEY = "legacy_objective_key"
TUPLE_ID = "legacy_id"
RANK = "legacy_rank"
TRAINTUPLE_KEY = "legacy_traintuple_key"
TESTTUPLE_KEY = "legacy_testtuple_key"
CERTIFIED = "legacy_certified"
CLEAN_MODELS = "legacy_clean_models"

# kinds of functions
ALGO = "algo"
AGGREGATE_ALGO = "aggregate_algo"
COMPOSITE_ALGO = "composite_algo"
OBJECTIVE = "objective"
PREDICT = "predict"
ALGO_KINDS = (ALGO, AGGREGATE_ALGO, COMPOSITE_ALGO)
# kinds of tasks
TRAINTUPLE = "traintuple"
AGGREGATETUPLE = "aggregatetuple"
COMPOSITE_TRAINTUPLE = "composite_traintuple"
TESTTUPLE = "testtuple"
TESTTUPLE_PREDICT = "testtuple_predict"
TRAIN_KINDS = (TRAINTUPLE, AGGREGATETUPLE, COMPOSITE_TRAINTUPLE)
# kinds of plans
COMPUTE_PLAN = "compute_plan"
STANDALONE_PLAN = "standalone_plan"

MAX_VALUE = 100
KEYS_PER_VALUE = 2  # two 36-character UUIDs and a comma fit in a 100-character value


def user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's own metadata, without what the legacy client recorded."""
    return {k: v for k, v in (metadata or {}).items() if not k.startswith(PREFIX)}


def check_user_metadata(metadata: Any, field: str) -> dict[str, str]:
    """A 0.x ``metadata`` dict of strings, refusing the reserved prefix."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise LegacyTranslationError.for_field(field, metadata, "must be a dict of strings")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise LegacyTranslationError.for_field(f"{field}.{key}", value, "metadata keys and values must be strings")
        if key.startswith(PREFIX):
            raise LegacyTranslationError.for_field(
                f"{field}.{key}", value, f"keys starting with {PREFIX!r} are reserved for what the 0.x surface records"
            )
    return dict(metadata)


def split_keys(name: str, keys: Sequence[str]) -> dict[str, str]:
    """``keys`` as ``{name_0: "k1,k2", name_1: "k3", ...}`` (values fit the server's 100 characters)."""
    chunks = [keys[i : i + KEYS_PER_VALUE] for i in range(0, len(keys), KEYS_PER_VALUE)]
    return {f"{name}_{i}": ",".join(chunk) for i, chunk in enumerate(chunks)}


def joined_keys(name: str, metadata: Mapping[str, str]) -> list[str]:
    """The inverse of :func:`split_keys` (numbered keys read in order until one is missing)."""
    keys: list[str] = []
    index = 0
    while f"{name}_{index}" in metadata:
        keys.extend(k for k in metadata[f"{name}_{index}"].split(",") if k)
        index += 1
    return keys


def flag(value: bool) -> str:
    """A boolean as a metadata string."""
    return "true" if value else "false"


def is_true(metadata: Mapping[str, str], key: str) -> bool:
    """A boolean read back from metadata (absent means false)."""
    return metadata.get(key) == "true"
