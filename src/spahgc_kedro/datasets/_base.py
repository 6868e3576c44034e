"""Shared plumbing for the project's file datasets (local or fsspec paths, versioning)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractVersionedDataset, Version, get_filepath_str, get_protocol_and_path


class FileDataset(AbstractVersionedDataset):
    """A versionable single-file dataset; subclasses implement `_read`/`_write` on a local path."""

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(fs_args or {}))
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def _local_path(self, path: PurePosixPath) -> str:
        return get_filepath_str(path, self._protocol)

    def _load(self) -> Any:
        return self._read(self._local_path(self._get_load_path()))

    def _save(self, data: Any) -> None:
        path = self._local_path(self._get_save_path())
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        self._write(data, path)
        self._invalidate_cache()

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except Exception:  # noqa: BLE001 - kedro raises when no version exists yet
            return False
        return self._fs.exists(self._local_path(path))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "version": self._version}

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(str(self._filepath))

    def _read(self, path: str) -> Any:
        raise NotImplementedError

    def _write(self, data: Any, path: str) -> None:
        raise NotImplementedError
