"""Facts 0.x kept and 1.0 has no field for, recorded on the server as empty compute plans.

1.0 data samples carry no metadata (so no ``test_only`` flag and no content hash a client can
read back), and asset metadata cannot change after creation (so a dataset cannot be linked to an
objective later). The legacy client records these facts in *record plans*: compute plans without
tasks, tagged :data:`RECORD_TAG`, whose metadata holds the fact, and whose key is derived from
what they record (recording twice is a no-op). They live on the server, so every machine and
every organization of the channel sees them (a record is owned by the organization that
registered what it records); the 0.x listings never show them.

- ``data_samples``: for each sample registered through this client, ``legacy_sample_<sha256 of
  its content>`` = its key, and ``legacy_test_only`` for the batch (0.x's AlreadyExists rule for
  samples, ``test_only``, and the train/test split of ``get_dataset``). A crash between a sample's
  upload and its record leaves the sample unrecorded: a rerun registers that content again.
- ``dataset_objective``: one per dataset linked to an objective after its creation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

from substra_flows import SubstraClient
from substra_flows.exceptions import NotFound
from substra_flows.legacy import keys, metadata

RECORD_TAG = "substra-flows-legacy-record"
RECORD = "legacy_record"
SAMPLE_PREFIX = "legacy_sample_"
TEST_ONLY = "legacy_test_only"
DATA_SAMPLES = "data_samples"
DATASET_OBJECTIVE = "dataset_objective"
DATASET_KEY = "legacy_dataset_key"
SAMPLES_PER_RECORD = 100


@dataclass(frozen=True)
class RecordedSample:
    """A sample the legacy client registered: its key, and whether it is test-only."""

    key: str
    test_only: bool


class Records:
    """Reads and writes record plans through one client."""

    def __init__(self, client: SubstraClient) -> None:
        self._client = client

    def _write(self, kind: str, identity: Sequence[str], payload: Mapping[str, str]) -> None:
        spec = {
            "key": keys.derive_key("record", kind, *identity),
            "name": f"substra-flows legacy record: {kind}",
            "tag": RECORD_TAG,
            "metadata": {metadata.KIND: "record", RECORD: kind, **payload},
        }
        self._client.add_compute_plan(spec)  # an existing key is found, not duplicated

    def _read(self, kind: str, owner: Optional[str] = None) -> list[dict[str, str]]:
        filters: dict = {"tag": [RECORD_TAG], "metadata": [{"key": RECORD, "type": "is", "value": kind}]}
        if owner:
            filters["owner"] = [owner]
        plans = self._client.list_compute_plan(
            filters=filters,
            order_by="creation_date",
            ascending=True,
        )
        return [dict(p.metadata) for p in plans]

    # -- data samples ------------------------------------------------------------------------------

    def record_samples(self, keys_by_content: Mapping[str, str], test_only: bool) -> None:
        """Record registered samples (content sha256 -> key), in records of at most 100 samples."""
        items = sorted(keys_by_content.items(), key=lambda item: item[1])
        for start in range(0, len(items), SAMPLES_PER_RECORD):
            chunk = items[start : start + SAMPLES_PER_RECORD]
            payload = {f"{SAMPLE_PREFIX}{content}": key for content, key in chunk}
            payload[TEST_ONLY] = metadata.flag(test_only)
            self._write(DATA_SAMPLES, [key for _, key in chunk], payload)

    def samples(self, owner: Optional[str] = None) -> dict[str, RecordedSample]:
        """Every recorded sample (registered by ``owner``, if given), by content sha256."""
        found: dict[str, RecordedSample] = {}
        for record in self._read(DATA_SAMPLES, owner):
            test_only = metadata.is_true(record, TEST_ONLY)
            for name, key in record.items():
                if name.startswith(SAMPLE_PREFIX):
                    found.setdefault(name[len(SAMPLE_PREFIX) :], RecordedSample(key, test_only))
        return found

    def test_only(self, sample_keys: Sequence[str]) -> set[str]:
        """Which of these samples were registered with ``test_only=True``."""
        wanted = set(sample_keys)
        return {s.key for s in self.samples().values() if s.test_only and s.key in wanted}

    # -- dataset <-> objective -----------------------------------------------------------------------

    def link_objective(self, dataset_key: str, objective_key: str) -> None:
        """Record that a dataset is associated with an objective."""
        self._write(DATASET_OBJECTIVE, [dataset_key], {DATASET_KEY: dataset_key, metadata.OBJECTIVE_KEY: objective_key})

    def linked_objective(self, dataset_key: str) -> Optional[str]:
        """The objective a dataset was linked to after its creation, if any."""
        try:
            plan = self._client.get_compute_plan(keys.derive_key("record", DATASET_OBJECTIVE, dataset_key))
        except NotFound:
            return None
        return plan.metadata.get(metadata.OBJECTIVE_KEY)

    def linked_objectives(self) -> dict[str, str]:
        """Every such link, dataset key -> objective key (for listings)."""
        return {r[DATASET_KEY]: r[metadata.OBJECTIVE_KEY] for r in self._read(DATASET_OBJECTIVE) if DATASET_KEY in r}
