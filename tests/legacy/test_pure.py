"""Unit tests of the pure parts of the 0.x surface: schemas, archives, filters, profiles, keys, metadata."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from examples import legacy as legacy_assets
from substra_flows import exceptions as exc
from substra_flows.legacy import Client, archives, keys, listing, metadata, specs
from substra_flows.legacy.exceptions import LegacyTranslationError, ProfileNotFoundError
from substra_flows.legacy.profiles import ProfileStore

KEY = "17f98afc-2b82-4ce9-b232-1a471633d020"
SHA = "a" * 64


# -- 0.x schemas --------------------------------------------------------------------------------------------


def traintuple(**extra: Any) -> dict[str, Any]:
    return {"algo_key": KEY, "data_manager_key": KEY, "train_data_sample_keys": [KEY], **extra}


def test_an_unknown_0x_field_is_named_not_dropped():
    with pytest.raises(exc.SpecValidationError) as raised:
        specs.parse(specs.TraintupleData, traintuple(in_model_keys=[KEY]), "add_traintuple")
    assert "add_traintuple.in_model_keys" in str(raised.value)


def test_a_0x_sha256_key_is_explained():
    with pytest.raises(exc.SpecValidationError) as raised:
        specs.parse(specs.TraintupleData, traintuple(algo_key=SHA), "add_traintuple")
    assert "add_traintuple.algo_key" in str(raised.value) and "0.x key" in str(raised.value)
    with pytest.raises(exc.KeyFormatError) as raised:
        specs.legacy_key_for("not-a-key", "dataset_key")
    assert raised.value.field == "dataset_key"


def test_ranks_may_be_digit_strings_as_0x_sent_them():
    assert specs.parse(specs.TraintupleData, traintuple(rank="2"), "m").rank == 2
    with pytest.raises(exc.SpecValidationError, match="rank"):
        specs.parse(specs.TraintupleData, traintuple(rank=-1), "m")
    with pytest.raises(exc.SpecValidationError, match="rank"):
        specs.parse(specs.TraintupleData, traintuple(rank=True), "m")


def test_both_spellings_of_authorized_ids_are_accepted(tmp_path: Path):
    description = legacy_assets.write_description(tmp_path / "d.md", "d")
    archive = legacy_assets.build_archive("algo", tmp_path)
    for spelling in ("authorized_ids", "authorizedIDs"):
        data = {
            "name": "a",
            "description": description,
            "file": archive,
            "permissions": {"public": False, spelling: ["X"]},
        }
        assert specs.parse(specs.AlgoData, data, "add_algo").permissions.authorized_ids == ["X"]


def test_out_trunk_model_permissions_cannot_be_public():
    data = {
        "algo_key": KEY,
        "data_manager_key": KEY,
        "train_data_sample_keys": [KEY],
        "out_trunk_model_permissions": {"public": True, "authorized_ids": []},
    }
    with pytest.raises(exc.SpecValidationError, match="out_trunk_model_permissions=.*cannot be made public"):
        specs.parse(specs.CompositeTraintupleData, data, "add_composite_traintuple")


def test_head_and_trunk_models_go_together():
    data = {
        "algo_key": KEY,
        "data_manager_key": KEY,
        "train_data_sample_keys": [KEY],
        "in_head_model_key": KEY,
        "out_trunk_model_permissions": {"authorized_ids": []},
    }
    with pytest.raises(exc.SpecValidationError, match="go together"):
        specs.parse(specs.CompositeTraintupleData, data, "add_composite_traintuple")


def test_update_compute_plan_has_no_plan_level_fields():
    with pytest.raises(exc.SpecValidationError, match="update_compute_plan.clean_models"):
        specs.parse(specs.PlanTuples, {"clean_models": True}, "update_compute_plan")


def test_user_metadata_may_not_use_the_reserved_prefix():
    with pytest.raises(LegacyTranslationError) as raised:
        metadata.check_user_metadata({"legacy_kind": "x"}, "add_algo.metadata")
    assert raised.value.field == "add_algo.metadata.legacy_kind"
    assert metadata.user_metadata({"a": "1", "legacy_kind": "algo"}) == {"a": "1"}


def test_key_lists_split_to_fit_metadata_values_and_join_back():
    sample_keys = [str(uuid.UUID(int=i)) for i in range(5)]
    split = metadata.split_keys("legacy_test_samples", sample_keys)
    assert len(split) == 3 and all(len(v) <= 100 for v in split.values())
    assert metadata.joined_keys("legacy_test_samples", split) == sample_keys
    assert metadata.joined_keys("legacy_test_samples", {}) == []


def test_derived_keys_are_stable_uuid5s():
    assert keys.derive_key("traintuple", "org", [KEY]) == keys.derive_key("traintuple", "org", [KEY])
    assert keys.derive_key("a", "b") != keys.derive_key("b", "a")
    plan = keys.derive_key("plan")
    assert keys.plan_tuple_key(plan, "t1") != keys.plan_tuple_key(plan, "t2")
    assert uuid.UUID(keys.predict_key(plan)).version == 5
    # pinned: a change would give every tuple already created a new key (AlreadyExists would stop working)
    assert keys.derive_key("x") == "e6ad1c64-f48e-5409-8f0c-e9f856aa8d63"


# -- archives -----------------------------------------------------------------------------------------------


def test_the_entrypoint_gets_the_function_name():
    dockerfile = 'FROM python:3.11\nENTRYPOINT ["python3", "algo.py"]\n'
    assert archives.with_function_name(dockerfile, "train", "f").splitlines()[-1] == (
        'ENTRYPOINT ["python3", "algo.py", "--function-name", "train"]'
    )
    named = 'ENTRYPOINT ["python3", "algo.py", "--function-name", "old"]'
    assert '"--function-name", "predict"' in archives.with_function_name(named, "predict", "f")
    assert '"old"' not in archives.with_function_name(named, "predict", "f")


@pytest.mark.parametrize(
    "dockerfile, why",
    [
        ("FROM python\n", "exactly one ENTRYPOINT"),
        ('ENTRYPOINT ["a.py"]\nENTRYPOINT ["b.py"]\n', "exactly one ENTRYPOINT"),
        ("ENTRYPOINT python3 algo.py\n", "exec form"),
        ('ENTRYPOINT ["./run.sh"]\n', "Python script"),
    ],
)
def test_entrypoints_that_cannot_be_rewritten_are_refused(dockerfile: str, why: str):
    with pytest.raises(LegacyTranslationError, match=why):
        archives.with_function_name(dockerfile, "train", "add_algo.file")


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_role_archives_are_reproducible_and_keep_every_file(tmp_path: Path):
    source = legacy_assets.build_archive("composite_algo", tmp_path / "src")
    first = archives.role_archive(source, "train", tmp_path / "a" / "train.tar.gz", "f")
    second = archives.role_archive(source, "train", tmp_path / "b" / "train.tar.gz", "f")
    assert first.read_bytes() == second.read_bytes()
    members = _members(first)
    assert set(members) == {"Dockerfile", "composite_algo.py", "logreg.py"}
    assert b'"--function-name", "train"' in members["Dockerfile"]
    predict = _members(archives.role_archive(source, "predict", tmp_path / "predict.tar.gz", "f"))
    assert b'"--function-name", "predict"' in predict["Dockerfile"]


def test_zip_archives_are_read_too(tmp_path: Path):
    source = tmp_path / "algo.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("Dockerfile", 'ENTRYPOINT ["python3", "algo.py"]\n')
        archive.writestr("algo.py", "print('hi')\n")
    members = _members(archives.role_archive(source, "train", tmp_path / "out.tar.gz", "f"))
    assert members["algo.py"] == b"print('hi')\n"


def test_an_archive_without_dockerfile_is_refused(tmp_path: Path):
    source = tmp_path / "bad.tar.gz"
    with tarfile.open(source, "w:gz") as archive:
        info = tarfile.TarInfo("algo.py")
        data = b"x"
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(LegacyTranslationError, match="no Dockerfile"):
        archives.role_archive(source, "train", tmp_path / "out.tar.gz", "add_algo.file")
    not_an_archive = tmp_path / "plain.txt"
    not_an_archive.write_text("hello")
    with pytest.raises(LegacyTranslationError, match="neither a zip nor a tar"):
        archives.read_members(not_an_archive, "add_algo.file")


# -- 0.x filters --------------------------------------------------------------------------------------------

FIELDS = {"traintuple": {"key", "tag", "status", "rank"}, "algo": {"name", "key"}}
VIEWS = [
    {"key": "1", "tag": "a", "status": "done", "rank": 0, "algo": {"name": "x", "key": "k1"}},
    {"key": "2", "tag": "b", "status": "done", "rank": 1, "algo": {"name": "y", "key": "k2"}},
    {"key": "3", "tag": "a", "status": "failed", "rank": 1, "algo": {"name": "y", "key": "k2"}},
]


def test_filters_and_within_a_group_or_between_groups():
    groups = listing.parse(["traintuple:tag:a", "algo:name:y"], "traintuple", FIELDS)
    assert [v["key"] for v in listing.apply(VIEWS, "traintuple", groups, False)] == ["3"]
    groups = listing.parse(["traintuple:rank:0", "OR", "traintuple:status:failed"], "traintuple", FIELDS)
    assert [v["key"] for v in listing.apply(VIEWS, "traintuple", groups, False)] == ["1", "3"]
    complex_answer = listing.apply(VIEWS, "traintuple", groups, True)
    assert [[v["key"] for v in g] for g in complex_answer] == [["1"], ["3"]]
    assert listing.apply(VIEWS, "traintuple", [], False) == VIEWS


@pytest.mark.parametrize(
    "filters, why",
    [
        (["traintuple:nope:1"], "has no field 'nope'"),
        (["model:key:1"], "cannot be filtered on 'model'"),
        (["tag=a"], "expected 'OR'"),
        (["OR", "traintuple:tag:a"], "must separate"),
        ("traintuple:tag:a", "expected a list"),
    ],
)
def test_bad_filters_are_named(filters: Any, why: str):
    with pytest.raises(exc.InvalidRequest, match=why):
        listing.parse(filters, "traintuple", FIELDS)


# -- profiles -----------------------------------------------------------------------------------------------


def test_add_profile_writes_no_password(tmp_path: Path):
    client = Client(config_path=tmp_path / "config", user_path=tmp_path / "user")
    profile = client.add_profile("org-1", "alice", "s3cret-password", "http://127.0.0.1:9/org-1")
    assert profile == {"url": "http://127.0.0.1:9/org-1", "version": "0.0", "insecure": False, "username": "alice"}
    text = (tmp_path / "config").read_text()
    assert "s3cret-password" not in text and json.loads(text)["org-1"]["username"] == "alice"
    assert not (tmp_path / "user").exists()


def test_a_profile_is_read_back_from_the_config_file_with_its_token(tmp_path: Path):
    store = ProfileStore(tmp_path / "config", tmp_path / "user")
    Client(config_path=store.config_path, user_path=store.user_path).add_profile("org-2", "bob", "pw", "http://h/org-2")
    store.save_token("org-2", "tok-123")
    assert stat.S_IMODE((tmp_path / "user").stat().st_mode) == 0o600
    client = Client(config_path=store.config_path, profile_name="org-2", user_path=store.user_path)
    assert client.backend.url == "http://h/org-2" and client.backend.transport.token == "tok-123"
    assert client.set_profile("org-2")["username"] == "bob"


def test_login_without_a_password_in_memory_says_why(tmp_path: Path):
    store = ProfileStore(tmp_path / "config", tmp_path / "user")
    Client(config_path=store.config_path, user_path=store.user_path).add_profile("p", "bob", "pw", "http://h/p")
    fresh = Client(config_path=store.config_path, profile_name="p", user_path=store.user_path)
    with pytest.raises(exc.ConfigurationError, match="Passwords are never written to disk"):
        fresh.login()


def test_a_0x_single_user_file_and_unknown_profiles(tmp_path: Path):
    (tmp_path / "user").write_text(json.dumps({"token": "old-token"}))
    store = ProfileStore(tmp_path / "config", tmp_path / "user")
    assert store.token("any") == "old-token"
    with pytest.raises(ProfileNotFoundError, match="'ghost' is not defined"):
        Client(config_path=tmp_path / "config", profile_name="ghost")
    with pytest.raises(exc.ConfigurationError, match="no current profile"):
        Client(config_path=tmp_path / "absent").list_algo()


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"debug": True}, "debug"),
        ({"version": "0.1", "url": "http://h"}, "version"),
        ({"config_path": "http://h"}, "config_path"),
    ],
)
def test_client_options_without_1_0_meaning_are_refused(kwargs: dict[str, Any], field: str):
    with pytest.raises(LegacyTranslationError) as raised:
        Client(**kwargs)
    assert raised.value.field == field


def test_a_config_file_that_is_not_json_is_reported_not_ignored(tmp_path: Path):
    (tmp_path / "config").write_text("url = http://h\n")
    with pytest.raises(exc.ConfigurationError, match="not a readable JSON file"):
        Client(config_path=tmp_path / "config")
