"""Where recordings are kept: a local directory by default."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol


class RecordingStorage(Protocol):
    def put(self, call_id: str, source: Path) -> str:
        """Store `source` as the call's recording; returns its storage key."""
        ...

    def path_of(self, storage_key: str) -> Path | None:
        """A local file to serve for `storage_key`, or None when it is not stored here."""
        ...


class LocalStorage:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def put(self, call_id: str, source: Path) -> str:
        key = f"recordings/{call_id}{source.suffix}"
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy beside the target and rename, so a reader never sees half a file.
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(source, partial)
        partial.replace(target)
        return key

    def path_of(self, storage_key: str) -> Path | None:
        path = (self.root / storage_key).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        return path
