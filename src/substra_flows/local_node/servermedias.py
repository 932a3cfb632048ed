"""Server-path data samples: one folder per organization, and what a registered folder may hold.

Organization ``org-N`` registers folders under ``<servermedias root>/org-N/`` only: never another
organization's folder, nor a root itself. A registered folder must hold regular files and folders
only: a symbolic link (or a FIFO, a device) inside it is refused, since task code would read
through it whatever it points to.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from .limits import RequestRejected

_SHOWN = 200  # characters of a refused path shown in a message


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


class ServerMedias:
    """The server media root, its per-organization folders, and the checks on registered paths."""

    def __init__(self, root: Path, organization_names: list[str]) -> None:
        self.root = root.resolve()
        self._folders = {name: self.root / name for name in organization_names}
        for folder in self._folders.values():
            folder.mkdir(parents=True, exist_ok=True)

    def folder(self, organization_name: str) -> Path:
        """The folder under which ``organization_name`` registers server-path samples."""
        return self._folders[organization_name]

    def sample_folder(self, raw: Any, organization_name: str) -> Path:
        """The resolved folder of one sample, after every check (400 naming the path otherwise)."""
        folder = self._inside(raw, organization_name, parent=False)
        self._check_contents(raw, folder)
        return folder

    def parent_folder(self, raw: Any, organization_name: str) -> Path:
        """The resolved folder whose sub-folders are samples (``multiple=True``); may be the
        organization's folder itself."""
        return self._inside(raw, organization_name, parent=True)

    def _inside(self, raw: Any, organization_name: str, *, parent: bool) -> Path:
        if not isinstance(raw, str) or not raw:
            raise RequestRejected(400, f"Invalid path {_shown(raw)}")
        if "\x00" in raw:
            raise RequestRejected(400, f"Invalid path {_shown(raw)}: Null characters are not allowed.")
        own = self._folders[organization_name]
        try:
            os.fsencode(raw)
            path = Path(raw)
            if path.is_symlink():
                raise RequestRejected(400, f"Path {_shown(raw)} is a symbolic link, which is not allowed")
            resolved = path.resolve()
            is_dir = resolved.is_dir()
        except UnicodeEncodeError:
            raise RequestRejected(400, f"Invalid path {_shown(raw)}: not a valid file name") from None
        except (OSError, RuntimeError) as error:  # too long, a symlink loop, no permission...
            raise RequestRejected(400, f"Path {_shown(raw)} cannot be read: {error.__class__.__name__}") from None
        if not (own in resolved.parents or (parent and resolved == own)):
            raise RequestRejected(
                400,
                f"Path {_shown(raw)} is not inside the server media folder of {organization_name} ({own}); "
                "each organization registers sub-folders of its own folder only",
            )
        if not is_dir:
            raise RequestRejected(400, f"Path {_shown(raw)} is not an existing directory")
        return resolved

    @staticmethod
    def _check_contents(raw: Any, folder: Path) -> None:
        """Refuse links and special files anywhere inside ``folder``; refuse it empty."""
        empty = True
        pending = [folder]
        while pending:
            current = pending.pop()
            try:
                with os.scandir(current) as entries:
                    for entry in entries:
                        empty = False
                        mode = entry.stat(follow_symlinks=False).st_mode
                        if stat.S_ISLNK(mode):
                            inner = Path(entry.path).relative_to(folder)
                            raise RequestRejected(
                                400,
                                f"Path {_shown(raw)} contains a symbolic link ({inner}), which is not allowed",
                            )
                        if stat.S_ISDIR(mode):
                            pending.append(Path(entry.path))
                        elif not stat.S_ISREG(mode):
                            inner = Path(entry.path).relative_to(folder)
                            raise RequestRejected(
                                400, f"Path {_shown(raw)} contains {inner}, which is not a regular file"
                            )
            except OSError as error:
                raise RequestRejected(400, f"Path {_shown(raw)} cannot be read: {error}") from None
        if empty:
            raise RequestRejected(400, f"Directory {_shown(raw)} is empty")
