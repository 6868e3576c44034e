"""Shared plumbing for the project's file datasets (local or fsspec paths, versioning).

Writes are atomic: the file is written under a temporary name beside its place and renamed
into it once complete, so an interrupted run never leaves a half-written file where a later
run would read it.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractVersionedDataset, Version, get_filepath_str, get_protocol_and_path

from spahgc_kedro.errors import InputDataError


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
        path = self._local_path(self._get_load_path())
        try:
            return self._read(path)
        except FileNotFoundError:
            raise
        except Exception as error:  # noqa: BLE001 - h5py, torch and zip readers raise many types for a bad file
            raise InputDataError(
                f"Cannot read '{path}': {error}. The file is damaged or was written by another version of the "
                "project: delete it and re-run the pipeline that writes it."
            ) from error

    def _save(self, data: Any) -> None:
        path = self._local_path(self._get_save_path())
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        partial = f"{path}.partial-{os.getpid()}"
        try:
            self._write(data, partial)
            self._fs.mv(partial, path)
        finally:
            if self._fs.exists(partial):
                self._fs.rm(partial)
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
