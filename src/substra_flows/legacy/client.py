"""``substra_flows.legacy.Client``: the 0.x ``substra.Client`` surface, on a Substra 1.0 deployment.

A thin facade: profiles (:mod:`profiles`) choose the server, and each call is handed to the room
that translates it (assets, tuples, plans, reads, leaderboard) over one :class:`SubstraClient`,
which brings the timeouts, the retries where they are safe and the error messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional, Union

from substra_flows import SubstraClient
from substra_flows.exceptions import register_secret
from substra_flows.legacy import listing, metadata, specs, views
from substra_flows.legacy.assets import AssetRegistry
from substra_flows.legacy.catalog import Catalog
from substra_flows.legacy.exceptions import ConfigurationError, LegacyTranslationError, ProfileNotFoundError
from substra_flows.legacy.leaderboard import leaderboard
from substra_flows.legacy.plans import PlanRegistry
from substra_flows.legacy.profiles import API_VERSION, DEFAULT_PROFILE, Profile, ProfileStore, check_version
from substra_flows.legacy.reads import TupleReader
from substra_flows.legacy.records import Records
from substra_flows.legacy.tuples import TupleRegistry

Filters = Optional[list[str]]
Listing = Union[list[dict[str, Any]], list[list[dict[str, Any]]]]


@dataclass
class _Rooms:
    """Everything that works for one organization, built on its SubstraClient."""

    client: SubstraClient

    @cached_property
    def creator(self) -> str:
        return self.client.organization_info().organization_id

    @cached_property
    def records(self) -> Records:
        return Records(self.client)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.client, self.records)

    @cached_property
    def assets(self) -> AssetRegistry:
        return AssetRegistry(self.client, self.catalog, self.records, lambda: self.creator)

    @cached_property
    def tuples(self) -> TupleRegistry:
        return TupleRegistry(self.client, self.catalog, lambda: self.creator)

    @cached_property
    def plans(self) -> PlanRegistry:
        return PlanRegistry(self.client, self.catalog, lambda: self.creator)

    def reader(self) -> TupleReader:
        return TupleReader(self.client, self.catalog)


class Client:
    """Client of one Substra node, as the 0.x SDK offered it (see the README's 0.x section).

    ``Client(config_path=None, profile_name=None, user_path=None, retry_timeout=300)`` reads the
    profile (default ``"default"``) from ``config_path`` and its token from ``user_path``. The
    later 0.x signature works too: ``Client(url=..., token=..., insecure=...)`` (a profile kept in
    memory only), and ``Client.from_config_file(...)``. ``debug=True`` (0.x's local backend) has no
    1.0 remote equivalent and is refused; use ``substra_flows.local_node.LocalNode`` instead.
    """

    def __init__(
        self,
        config_path: Optional[Union[str, os.PathLike[str]]] = None,
        profile_name: Optional[str] = None,
        user_path: Optional[Union[str, os.PathLike[str]]] = None,
        retry_timeout: int = 300,
        *,
        url: Optional[str] = None,
        token: Optional[str] = None,
        version: str = API_VERSION,
        insecure: bool = False,
        debug: bool = False,
    ) -> None:
        if debug:
            raise LegacyTranslationError.for_field(
                "debug", debug, "0.x's local debugging backend does not exist on 1.0; run a LocalNode instead"
            )
        if isinstance(config_path, str) and config_path.startswith(("http://", "https://")):
            raise LegacyTranslationError.for_field(
                "config_path", config_path, "is a URL: pass url=... (and token=...), or the path of a config file"
            )
        check_version(version)
        self._store = ProfileStore(config_path, user_path)
        self._retry_timeout = retry_timeout
        self._profiles: dict[str, Profile] = {}
        self._passwords: dict[str, str] = {}
        self._tokens: dict[str, str] = {}
        self._persisted: set[str] = set()
        self._saved_tokens: set[str] = set()
        self._current: Optional[Profile] = None
        self._rooms: Optional[_Rooms] = None
        if url is not None:
            name = profile_name or DEFAULT_PROFILE
            self._profiles[name] = Profile(name=name, url=url, version=version, insecure=insecure)
            if token:
                register_secret(token)
                self._tokens[name] = token
            self._switch(self._profiles[name])
        elif profile_name is not None:
            self.set_profile(profile_name)
        elif self._store.config_path.exists():
            try:
                self.set_profile(DEFAULT_PROFILE)
            except ProfileNotFoundError:
                pass  # no default profile yet: add_profile() or set_profile() comes next
        if token and self._current is not None and url is None:
            register_secret(token)
            self._tokens[self._current.name] = token
            self._switch(self._current)

    @classmethod
    def from_config_file(
        cls,
        profile_name: str = DEFAULT_PROFILE,
        config_path: Union[str, os.PathLike[str]] = "~/.substra",
        tokens_path: Union[str, os.PathLike[str]] = "~/.substra-tokens",
        token: Optional[str] = None,
        retry_timeout: int = 300,
        debug: bool = False,
    ) -> Client:
        """The 0.x ``from_config_file``: a profile from ``config_path``, its token from ``tokens_path``."""
        return cls(config_path, profile_name, tokens_path, retry_timeout, token=token, debug=debug)

    # -- profiles and login ------------------------------------------------------------------------

    def _switch(self, profile: Profile) -> None:
        self.close()
        self._current = profile
        self._profiles[profile.name] = profile
        self._rooms = None

    @property
    def _legacy(self) -> _Rooms:
        if self._current is None:
            raise ConfigurationError(
                "no current profile: call add_profile(...) or set_profile(...), or pass url=... to Client()"
            )
        if self._rooms is None:
            client = SubstraClient(
                url=self._current.url,
                token=self._tokens.get(self._current.name),
                insecure=self._current.insecure,
                retry_timeout=self._retry_timeout,
            )
            self._rooms = _Rooms(client)
        return self._rooms

    def add_profile(
        self,
        profile_name: str,
        username: str,
        password: str,
        url: str,
        version: str = API_VERSION,
        insecure: bool = False,
    ) -> dict[str, Any]:
        """Add a profile, save it (without its password) in the config file, and make it current."""
        check_version(version)
        profile = Profile(name=profile_name, url=url, version=version, insecure=insecure, username=username)
        register_secret(password)
        self._store.save(profile)
        self._persisted.add(profile_name)
        self._passwords[profile_name] = password
        self._switch(profile)
        return profile.to_dict()

    def set_profile(self, profile_name: str) -> dict[str, Any]:
        """Make a profile current: added in this process, or read from the config file."""
        profile = self._profiles.get(profile_name)
        if profile is None:
            profile = self._store.load(profile_name)
            self._persisted.add(profile_name)
        self._switch(profile)
        self.set_user()
        return profile.to_dict()

    def set_user(self) -> None:
        """Use the token saved in the user file for the current profile, if there is one."""
        if self._current is None or self._current.name not in self._persisted:
            return
        token = self._store.token(self._current.name)
        if token and token != self._tokens.get(self._current.name):
            register_secret(token)
            self._tokens[self._current.name] = token
            self._saved_tokens.add(self._current.name)
            self._switch(self._current)

    def login(self, username: Optional[str] = None, password: Optional[str] = None) -> str:
        """Get a token with the profile's username and password (or the ones given) and use it.

        The token is saved in the user file for a profile of the config file; the password never is.
        """
        legacy = self._legacy  # raises when there is no current profile
        profile = self._current
        assert profile is not None
        username = username or profile.username
        password = password or self._passwords.get(profile.name)
        if not username or not password:
            raise ConfigurationError(
                f"profile {profile.name!r}: no {'username' if not username else 'password'} to log in with. "
                "Passwords are never written to disk: call add_profile(...) in this process, or "
                "login(username, password), or set_user() to use the token saved by an earlier login"
            )
        token = legacy.client.login(username, password)
        self._tokens[profile.name] = token
        if profile.name in self._persisted:
            self._store.save_token(profile.name, token)
            self._saved_tokens.add(profile.name)
        return token

    def close(self) -> None:
        """Release the connections of the current profile (the 0.x client had nothing to close).

        A token saved in the user file stays valid (a later run loads it with ``set_user``); a token
        of a profile kept in memory only is deleted on the server (logout).
        """
        rooms, self._rooms = self._rooms, None
        if rooms is None:
            return
        if self._current is not None and self._current.name in self._saved_tokens:
            rooms.client.transport.close()
        else:
            rooms.client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        url = self._current.url if self._current else None
        return f"legacy.Client(profile={getattr(self._current, 'name', None)!r}, url={url!r})"

    @property
    def backend(self) -> SubstraClient:
        """The 1.0 client underneath (its waits, performances and downloads are all there)."""
        return self._legacy.client

    # -- algos and objectives -----------------------------------------------------------------------

    def add_algo(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Register an algo (a train and a predict function from its archive)."""
        return self._legacy.assets.add_algo(metadata.ALGO, data, exist_ok, "add_algo")

    def add_aggregate_algo(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Register an aggregate algo (an aggregate and a predict function)."""
        return self._legacy.assets.add_algo(metadata.AGGREGATE_ALGO, data, exist_ok, "add_aggregate_algo")

    def add_composite_algo(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Register a composite algo (a train and a predict function over head and trunk models)."""
        return self._legacy.assets.add_algo(metadata.COMPOSITE_ALGO, data, exist_ok, "add_composite_algo")

    def add_objective(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Register an objective (a metric function carrying its test data)."""
        return self._legacy.assets.add_objective(data, exist_ok)

    def _function_view(self, kind: str, key: str, field: str) -> dict[str, Any]:
        legacy = self._legacy
        function = legacy.catalog.function(specs.legacy_key_for(key, field), (kind,), field)
        if kind == metadata.OBJECTIVE:
            return legacy.assets.objective_view(function)
        return views.algo_view(function)

    def get_algo(self, algo_key: str) -> dict[str, Any]:
        """An algo."""
        return self._function_view(metadata.ALGO, algo_key, "algo_key")

    def get_aggregate_algo(self, aggregate_algo_key: str) -> dict[str, Any]:
        """An aggregate algo."""
        return self._function_view(metadata.AGGREGATE_ALGO, aggregate_algo_key, "aggregate_algo_key")

    def get_composite_algo(self, composite_algo_key: str) -> dict[str, Any]:
        """A composite algo."""
        return self._function_view(metadata.COMPOSITE_ALGO, composite_algo_key, "composite_algo_key")

    def get_objective(self, objective_key: str) -> dict[str, Any]:
        """An objective."""
        return self._function_view(metadata.OBJECTIVE, objective_key, "objective_key")

    def _list_functions(self, kind: str, filters: Filters, is_complex: bool) -> Listing:
        asset_type = "objective" if kind == metadata.OBJECTIVE else "algo"
        groups = listing.parse(filters, asset_type, views.FIELDS[asset_type])
        legacy = self._legacy
        found = legacy.assets.functions(lambda f: f.metadata.get(metadata.KIND) == kind)
        if kind == metadata.OBJECTIVE:
            shown = [legacy.assets.objective_view(f) for f in found]
        else:
            shown = [views.algo_view(f) for f in found]
        return listing.apply(shown, asset_type, groups, is_complex)

    def list_algo(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Algos (filters: ``["algo:name:my algo", "OR", ...]``)."""
        return self._list_functions(metadata.ALGO, filters, is_complex)

    def list_aggregate_algo(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Aggregate algos (filtered as algos: ``algo:<field>:<value>``)."""
        return self._list_functions(metadata.AGGREGATE_ALGO, filters, is_complex)

    def list_composite_algo(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Composite algos (filtered as algos: ``algo:<field>:<value>``)."""
        return self._list_functions(metadata.COMPOSITE_ALGO, filters, is_complex)

    def list_objective(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Objectives."""
        return self._list_functions(metadata.OBJECTIVE, filters, is_complex)

    def _describe(self, kind: str, key: str, field: str) -> str:
        legacy = self._legacy
        function = legacy.catalog.function(specs.legacy_key_for(key, field), (kind,), field)
        return legacy.client.describe_function(function.key)

    def describe_algo(self, algo_key: str) -> str:
        """An algo's description (Markdown)."""
        return self._describe(metadata.ALGO, algo_key, "algo_key")

    def describe_aggregate_algo(self, aggregate_algo_key: str) -> str:
        """An aggregate algo's description."""
        return self._describe(metadata.AGGREGATE_ALGO, aggregate_algo_key, "aggregate_algo_key")

    def describe_composite_algo(self, composite_algo_key: str) -> str:
        """A composite algo's description."""
        return self._describe(metadata.COMPOSITE_ALGO, composite_algo_key, "composite_algo_key")

    def describe_objective(self, objective_key: str) -> str:
        """An objective's description."""
        return self._describe(metadata.OBJECTIVE, objective_key, "objective_key")

    def _download(self, kind: str, key: str, folder: Union[str, os.PathLike[str]], field: str) -> str:
        legacy = self._legacy
        function = legacy.catalog.function(specs.legacy_key_for(key, field), (kind,), field)
        return str(legacy.client.download_function(function.key, folder))

    def download_algo(self, algo_key: str, destination_folder: Union[str, os.PathLike[str]]) -> str:
        """Save the algo's archive (as registered: its ENTRYPOINT names the train function)."""
        return self._download(metadata.ALGO, algo_key, destination_folder, "algo_key")

    def download_aggregate_algo(self, aggregate_algo_key: str, destination_folder: Union[str, os.PathLike[str]]) -> str:
        """Save the aggregate algo's archive."""
        return self._download(metadata.AGGREGATE_ALGO, aggregate_algo_key, destination_folder, "aggregate_algo_key")

    def download_composite_algo(self, composite_algo_key: str, destination_folder: Union[str, os.PathLike[str]]) -> str:
        """Save the composite algo's archive."""
        return self._download(metadata.COMPOSITE_ALGO, composite_algo_key, destination_folder, "composite_algo_key")

    def download_objective(self, objective_key: str, destination_folder: Union[str, os.PathLike[str]]) -> str:
        """Save the objective's metrics archive."""
        return self._download(metadata.OBJECTIVE, objective_key, destination_folder, "objective_key")

    def leaderboard(self, objective_key: str, sort: str = "desc") -> dict[str, Any]:
        """The objective and its certified, done testtuples ordered by score."""
        legacy = self._legacy
        return leaderboard(legacy.client, legacy.catalog, specs.legacy_key_for(objective_key, "objective_key"), sort)

    # -- datasets and data samples ---------------------------------------------------------------------

    def add_dataset(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Register a dataset (``type`` and ``objective_key`` are kept in its metadata)."""
        return self._legacy.assets.add_dataset(data, exist_ok)

    def get_dataset(self, dataset_key: str) -> dict[str, Any]:
        """A dataset, with its train and test sample keys."""
        legacy = self._legacy
        key = specs.legacy_key_for(dataset_key, "dataset_key")
        return legacy.assets.dataset_view(legacy.client.get_dataset(key), full=True)

    def list_dataset(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Datasets (every dataset of the channel: data is data, whichever SDK registered it)."""
        groups = listing.parse(filters, "dataset", views.FIELDS["dataset"])
        legacy = self._legacy
        links = legacy.records.linked_objectives()
        shown = [
            views.dataset_view(d, d.metadata.get(metadata.OBJECTIVE_KEY) or links.get(d.key, ""))
            for d in legacy.client.list_dataset(order_by="creation_date", ascending=True)
        ]
        return listing.apply(shown, "dataset", groups, is_complex)

    def describe_dataset(self, dataset_key: str) -> str:
        """A dataset's description."""
        return self._legacy.client.describe_dataset(specs.legacy_key_for(dataset_key, "dataset_key"))

    def download_dataset(self, dataset_key: str, destination_folder: Union[str, os.PathLike[str]]) -> str:
        """Save a dataset's opener as ``opener.py``."""
        key = specs.legacy_key_for(dataset_key, "dataset_key")
        return str(self._legacy.client.download_dataset(key, destination_folder))

    def link_dataset_with_objective(self, dataset_key: str, objective_key: str) -> dict[str, Any]:
        """Associate a dataset with an objective (one objective per dataset, as in 0.x)."""
        return self._legacy.assets.link_dataset_with_objective(dataset_key, objective_key)

    def update_dataset(self, dataset_key: str, data: dict) -> dict[str, Any]:
        """The 0.x update: ``{"objective_key": ...}`` only."""
        if not isinstance(data, dict) or set(data) != {"objective_key"}:
            raise LegacyTranslationError.for_field(
                "update_dataset.data", data, "0.x could only update a dataset's objective: {'objective_key': ...}"
            )
        return self.link_dataset_with_objective(dataset_key, data["objective_key"])

    def add_data_sample(self, data: dict, local: bool = True, exist_ok: bool = False) -> dict[str, Any]:
        """Register one sample folder."""
        spec = specs.parse(specs.DataSampleData, data, "add_data_sample")
        legacy = self._legacy
        return legacy.assets.add_data_samples(
            [spec.path],
            spec.data_manager_keys,
            test_only=spec.test_only,
            local=local,
            exist_ok=exist_ok,
            field="path",
        )[0]

    def add_data_samples(self, data: dict, local: bool = True) -> list[dict[str, Any]]:
        """Register several sample folders in one request."""
        spec = specs.parse(specs.DataSamplesData, data, "add_data_samples")
        legacy = self._legacy
        return legacy.assets.add_data_samples(
            spec.paths,
            spec.data_manager_keys,
            test_only=spec.test_only,
            local=local,
            exist_ok=False,
            field="paths",
        )

    def link_dataset_with_data_samples(self, dataset_key: str, data_sample_keys: list[str]) -> list[dict[str, Any]]:
        """Attach samples to a dataset; return the updated samples."""
        legacy = self._legacy
        dataset_key = specs.legacy_key_for(dataset_key, "dataset_key")
        keys = [specs.legacy_key_for(k, f"data_sample_keys.{i}") for i, k in enumerate(data_sample_keys)]
        legacy.client.link_dataset_with_data_samples(dataset_key, keys)
        test_only = legacy.catalog.test_only(keys)
        samples = {s.key: s for s in legacy.client.list_data_sample(filters={"key": keys})}
        return [views.data_sample_view(samples[k], k in test_only) for k in keys if k in samples]

    def list_data_sample(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Data samples (``test_only`` as recorded when they were added through this surface)."""
        groups = listing.parse(filters, "data_sample", views.FIELDS["data_sample"])
        legacy = self._legacy
        test_only = {s.key for s in legacy.records.samples().values() if s.test_only}
        shown = [
            views.data_sample_view(s, s.key in test_only)
            for s in legacy.client.list_data_sample(order_by="creation_date", ascending=True)
        ]
        return listing.apply(shown, "data_sample", groups, is_complex)

    # -- tuples -------------------------------------------------------------------------------------------

    def add_traintuple(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Create a traintuple."""
        return self._legacy.tuples.add_traintuple(data, exist_ok)

    def add_aggregatetuple(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Create an aggregatetuple."""
        return self._legacy.tuples.add_aggregatetuple(data, exist_ok)

    def add_composite_traintuple(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Create a composite traintuple (its out trunk model cannot be public)."""
        return self._legacy.tuples.add_composite_traintuple(data, exist_ok)

    def add_testtuple(self, data: dict, exist_ok: bool = False) -> dict[str, Any]:
        """Create a testtuple (a predict task and a test task on 1.0)."""
        return self._legacy.tuples.add_testtuple(data, exist_ok)

    def _get_tuple(self, kind: str, key: str, field: str) -> dict[str, Any]:
        return self._legacy.reader().get(kind, specs.legacy_key_for(key, field))

    def get_traintuple(self, traintuple_key: str) -> dict[str, Any]:
        """A traintuple."""
        return self._get_tuple(metadata.TRAINTUPLE, traintuple_key, "traintuple_key")

    def get_aggregatetuple(self, aggregatetuple_key: str) -> dict[str, Any]:
        """An aggregatetuple."""
        return self._get_tuple(metadata.AGGREGATETUPLE, aggregatetuple_key, "aggregatetuple_key")

    def get_composite_traintuple(self, composite_traintuple_key: str) -> dict[str, Any]:
        """A composite traintuple."""
        return self._get_tuple(metadata.COMPOSITE_TRAINTUPLE, composite_traintuple_key, "composite_traintuple_key")

    def get_testtuple(self, testtuple_key: str) -> dict[str, Any]:
        """A testtuple (``dataset.perf`` holds its score once done)."""
        return self._get_tuple(metadata.TESTTUPLE, testtuple_key, "testtuple_key")

    def _list_tuples(self, kind: str, filters: Filters, is_complex: bool) -> Listing:
        groups = listing.parse(filters, kind, views.FIELDS[kind])
        return listing.apply(self._legacy.reader().of_kind(kind), kind, groups, is_complex)

    def list_traintuple(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Traintuples."""
        return self._list_tuples(metadata.TRAINTUPLE, filters, is_complex)

    def list_aggregatetuple(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Aggregatetuples."""
        return self._list_tuples(metadata.AGGREGATETUPLE, filters, is_complex)

    def list_composite_traintuple(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Composite traintuples."""
        return self._list_tuples(metadata.COMPOSITE_TRAINTUPLE, filters, is_complex)

    def list_testtuple(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Testtuples."""
        return self._list_tuples(metadata.TESTTUPLE, filters, is_complex)

    # -- compute plans ------------------------------------------------------------------------------------

    def add_compute_plan(self, data: dict) -> dict[str, Any]:
        """Create a compute plan of tuples (the same spec again finds the plan it created)."""
        return self._legacy.plans.add(data)

    def update_compute_plan(self, compute_plan_id: str, data: dict) -> dict[str, Any]:
        """Append tuples to a compute plan."""
        return self._legacy.plans.update(compute_plan_id, data)

    def cancel_compute_plan(self, compute_plan_id: str) -> dict[str, Any]:
        """Cancel a compute plan; return it."""
        return self._legacy.plans.cancel(compute_plan_id)

    def get_compute_plan(self, compute_plan_key: str) -> dict[str, Any]:
        """A compute plan (``id_to_key`` maps every tuple id of the plan to its key)."""
        return self._legacy.plans.get(compute_plan_key)

    def list_compute_plan(self, filters: Filters = None, is_complex: bool = False) -> Listing:
        """Compute plans made through the 0.x surface."""
        return self._legacy.plans.list(filters, is_complex)

    # -- nodes ----------------------------------------------------------------------------------------------

    def list_node(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """The nodes (organizations) of the channel: ``[{"id", "is_current"}]``."""
        if args or kwargs:
            raise LegacyTranslationError.for_field("list_node", [*args, *kwargs], "takes no argument")
        return [views.node_view(o) for o in self._legacy.client.list_organization()]
