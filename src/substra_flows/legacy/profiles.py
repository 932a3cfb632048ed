"""0.x profiles: named servers in a JSON config file, tokens in a JSON user file; no password on disk.

- ``config_path`` (default ``~/.substra``): ``{"<profile>": {"url", "version", "insecure",
  "username"}}``. Other entries of the file are kept as they are when a profile is saved.
- ``user_path`` (default ``~/.substra-user``): ``{"<profile>": {"token": "..."}}``, written with
  mode 0600. A 0.x single-user file (``{"token": "..."}``) is read as the token of any profile.

Passwords given to ``add_profile`` stay in the memory of the process, for ``login()``; a 0.x config
file that still holds an ``auth`` password is read for its url but its password is never used.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Optional

from substra_flows.legacy.exceptions import ConfigurationError, LegacyTranslationError, ProfileNotFoundError

DEFAULT_CONFIG_PATH = "~/.substra"
DEFAULT_USER_PATH = "~/.substra-user"
DEFAULT_PROFILE = "default"
API_VERSION = "0.0"


@dataclass(frozen=True)
class Profile:
    """A named server."""

    name: str
    url: str
    version: str = API_VERSION
    insecure: bool = False
    username: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """The 0.x profile dict (what add_profile and set_profile return)."""
        data = asdict(self)
        data.pop("name")
        return data


def check_version(version: Any, field: str = "version") -> str:
    """1.0 servers speak API version 0.0 only (they ignore the Accept version; others would be a lie)."""
    if version != API_VERSION:
        raise LegacyTranslationError.for_field(
            field, version, f"a 1.0 server serves the API version {API_VERSION!r} only"
        )
    return version


def _read_json(path: pathlib.Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: expected a JSON object of profiles")
    return data


def _write_json(path: pathlib.Path, data: dict[str, Any], private: bool) -> None:
    """Atomic write (temporary file in the same folder, then rename); 0600 when ``private``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if private:
            os.fchmod(handle, 0o600)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        pathlib.Path(temporary).unlink(missing_ok=True)
        raise


class ProfileStore:
    """The config file and the user file of one client."""

    def __init__(self, config_path: Optional[os.PathLike[str] | str], user_path: Optional[os.PathLike[str] | str]):
        self.config_path = pathlib.Path(config_path or DEFAULT_CONFIG_PATH).expanduser()
        self.user_path = pathlib.Path(user_path or DEFAULT_USER_PATH).expanduser()

    def load(self, name: str) -> Profile:
        """A profile from the config file (ProfileNotFoundError naming the file otherwise)."""
        entry = _read_json(self.config_path).get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ProfileNotFoundError(
                f"profile {name!r} is not defined: neither added with add_profile() nor found in {self.config_path}"
            )
        auth = entry.get("auth")
        auth = auth if isinstance(auth, dict) else {}
        username = entry.get("username") or auth.get("username") or auth.get("user")
        return Profile(
            name=name,
            url=entry["url"],
            version=check_version(entry.get("version", API_VERSION), f"{self.config_path}:{name}.version"),
            insecure=bool(entry.get("insecure", False)),
            username=username if isinstance(username, str) else None,
        )

    def save(self, profile: Profile) -> None:
        """Add or replace a profile in the config file, keeping the other entries."""
        data = _read_json(self.config_path)
        data[profile.name] = profile.to_dict()
        _write_json(self.config_path, data, private=False)

    def token(self, name: str) -> Optional[str]:
        """The token saved for a profile, if any."""
        data = _read_json(self.user_path)
        entry = data.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("token"), str):
            return entry["token"]
        if isinstance(data.get("token"), str):  # a 0.x single-user file
            return data["token"]
        return None

    def save_token(self, name: str, token: str) -> None:
        """Save a profile's token in the user file (mode 0600)."""
        data = _read_json(self.user_path)
        data[name] = {"token": token}
        _write_json(self.user_path, data, private=True)
