"""The ``files`` config store: every ``*.yaml``, ``*.yml`` and ``*.json`` under a directory,
re-read when a file's size or modification time changes (polled, every ``interval_s``).

Read-only: change the files (a GitOps checkout, a ConfigMap volume). A file that stops parsing
keeps its last parsed documents (and the parse error is reported as a rejection), so a half-saved
file never removes the resources it held. A file being written is not read half-way either: a
changed file is read once a scan finds it as the scan before did (size and modification time), so
an editor's truncate-then-write (an empty file for a moment) is seen whole, one ``interval_s``
later; a read during which the file changed again is thrown away and the file read when it settles.
The first scan reads every file at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sofamesh.core.errors import PluginError
from sofamesh.core.net.loop import cancel
from sofamesh.pilot.policy.documents import parse_stream
from sofamesh.pilot.policy.resource import Source
from sofamesh.pilot.policy.store import Changed, ConfigStore, StoredDocument

log = logging.getLogger("sofamesh.pilot.config_store.files")
_SUFFIXES = (".yaml", ".yml", ".json")


class FilesConfigStore(ConfigStore):
    def __init__(self, name: str, root: Path, interval_s: float = 1.0) -> None:
        self.name = name
        self.root = root
        self.interval_s = interval_s
        self._stamps: dict[Path, tuple[int, int]] = {}  # of the version read
        self._seen: dict[Path, tuple[int, int]] = {}  # a changed file, as the last scan found it
        self._docs: dict[Path, list[StoredDocument]] = {}
        self._problems: dict[Path, StoredDocument] = {}
        self._changed: Changed = lambda: None
        self._task: asyncio.Task[None] | None = None
        self.scans = 0

    async def start(self, changed: Changed) -> None:
        if not self.root.is_dir():
            raise PluginError(f"config store {self.name!r}: {self.root} is not a directory")
        self.scan()
        self._changed = changed
        self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                if await asyncio.to_thread(self.scan):
                    self._changed()
            except Exception:
                log.exception("config store %s: scanning %s failed", self.name, self.root)

    def scan(self) -> bool:
        """Re-read the files that changed and settled (every file on the first scan); ``True``
        when anything changed."""
        first = self.scans == 0
        self.scans += 1
        found: dict[Path, tuple[int, int]] = {}
        for path in sorted(self.root.rglob("*")):
            if path.suffix in _SUFFIXES and path.is_file() and not path.name.startswith("."):
                found[path] = _stamp(path)
        changed = False
        for path in list(self._stamps):
            if path not in found:
                del self._stamps[path]
                self._docs.pop(path, None)
                self._problems.pop(path, None)
                changed = True
        seen, self._seen = self._seen, {}
        for path, stamp in found.items():
            if self._stamps.get(path) == stamp:
                continue
            if not first and seen.get(path) != stamp:
                self._seen[path] = stamp  # changed since the last scan: perhaps still being written
                continue
            if self._read(path, stamp):
                self._stamps[path] = stamp
                changed = True
            else:
                self._seen[path] = (-1, -1)  # it changed while read: read when it settles
        return changed

    def _read(self, path: Path, stamp: tuple[int, int]) -> bool:
        """Take the file's documents; False (nothing taken) when it changed while being read."""
        origin = str(path.relative_to(self.root))
        try:
            text = path.read_text()
            if _stamp(path) != stamp:
                return False
        except (OSError, UnicodeDecodeError) as exc:
            self._problems[path] = StoredDocument(Source(origin), None, problem=f"cannot read: {exc}")
            return True
        docs: list[StoredDocument] = []
        for d in parse_stream(text):
            source = Source(origin, d.document, d.line, d.lines)
            if d.problem is not None:
                self._problems[path] = StoredDocument(source, None, problem=d.problem)
                return True  # keep the documents last read from this file
            docs.append(StoredDocument(source, d.body))
        self._problems.pop(path, None)
        self._docs[path] = docs
        return True

    def documents(self) -> Sequence[StoredDocument]:
        out: list[StoredDocument] = []
        for path in sorted(self._docs.keys() | self._problems.keys()):
            out.extend(self._docs.get(path, ()))
            if path in self._problems:
                out.append(self._problems[path])
        return out

    def describe(self) -> dict[str, Any]:
        return {"type": "files", "path": str(self.root), "files": len(self._stamps), "scans": self.scans,
                "interval_s": self.interval_s}


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


__all__ = ["FilesConfigStore"]
