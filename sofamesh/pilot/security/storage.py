"""Where Pilot keeps security state that must outlive a restart: the CA's root and key, the token
signing key, the revocation list. A :class:`SecretStorage` is a small map of named blobs, so the
same state can later live in a store Pilot replicas share; :class:`DirStorage` keeps it in a
directory under Pilot's ``data_dir``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

UPDATE_TRIES = 50
"""How many times ``update`` re-reads and retries when another writer changed the blob meanwhile."""


Changes = Callable[[Mapping[str, "bytes | None"]], Mapping[str, bytes]]
"""The blobs as read (``None``: absent) -> the blobs to write."""


def check_changes(names: Sequence[str], written: Mapping[str, bytes]) -> None:
    unknown = sorted(set(written) - set(names))
    if unknown:
        raise ValueError(f"update_many: {', '.join(unknown)} not among the blobs read")


class SecretStorage(Protocol):
    """Named blobs. Writes are durable when they return; readers see the old or the new blob."""

    def read(self, name: str) -> bytes | None:
        """The blob, or ``None`` when there is none."""

    def write(self, name: str, data: bytes, *, private: bool = False) -> None:
        """Create or replace ``name``; ``private`` blobs are readable by Pilot's user only."""

    def create(self, name: str, data: bytes, *, private: bool = False) -> bool:
        """Write ``name`` only if it does not exist; ``False`` when another writer was first (then
        read theirs: two replicas starting together must end up with one root)."""

    def update(self, name: str, change: Callable[[bytes | None], bytes], *, private: bool = False) -> bytes:
        """Replace ``name`` with ``change(current)`` only if nobody wrote it in between (a compare-
        and-set), reading and retrying otherwise; returns what was written. Two replicas updating
        the same blob at once lose neither change."""

    def update_many(self, names: Sequence[str], change: Changes, *, private: bool = False) -> Mapping[str, bytes]:
        """:meth:`update` for several blobs at once: ``change`` gets each of ``names`` (``None``:
        absent) and returns the blobs to write (a subset of ``names``); they are written together
        only if none of ``names`` changed in between, else read again and retried. An exception
        from ``change`` aborts (nothing written). Returns what was written."""

    def describe(self) -> str:
        """Where the blobs are, for logs and /debug pages."""


class DirStorage:
    """Blobs as files in one directory (created 0700), written atomically: temp file, fsync,
    ``os.replace`` (``os.link`` for ``create``), fsync of the directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._lock = threading.Lock()  # one Pilot owns a directory: its own updates are serialized

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad blob name {name!r}")
        return self.dir / name

    def read(self, name: str) -> bytes | None:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            return None

    def _temp(self, name: str, data: bytes, private: bool) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.dir / f".{name}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def _sync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, name: str, data: bytes, *, private: bool = False) -> None:
        target = self._path(name)
        os.replace(self._temp(name, data, private), target)
        self._sync_dir()

    def create(self, name: str, data: bytes, *, private: bool = False) -> bool:
        target = self._path(name)
        tmp = self._temp(name, data, private)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        self._sync_dir()
        return True

    def update(self, name: str, change: Callable[[bytes | None], bytes], *, private: bool = False) -> bytes:
        with self._lock:
            data = change(self.read(name))
            self.write(name, data, private=private)
            return data

    def update_many(self, names: Sequence[str], change: Changes, *, private: bool = False) -> Mapping[str, bytes]:
        with self._lock:
            written = change({name: self.read(name) for name in names})
            check_changes(names, written)
            for name, data in written.items():
                self.write(name, data, private=private)
            return written

    def describe(self) -> str:
        return str(self.dir)


__all__ = ["UPDATE_TRIES", "Changes", "DirStorage", "SecretStorage", "check_changes"]
