"""The ``files`` config store: every ``*.yaml``, ``*.yml`` and ``*.json`` under a directory,
re-read when a file's size or modification time changes (polled, every ``interval_s``).

Read-only: change the files (a GitOps checkout, a ConfigMap volume). A file that stops parsing
keeps its last parsed documents (and the parse error is reported as a rejection), so a half-saved
file never removes the resources it held.
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
        self._stamps: dict[Path, tuple[int, int]] = {}
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
        """Re-read changed files; ``True`` when anything changed."""
        self.scans += 1
        found: dict[Path, tuple[int, int]] = {}
        for path in sorted(self.root.rglob("*")):
            if path.suffix in _SUFFIXES and path.is_file() and not path.name.startswith("."):
                st = path.stat()
                found[path] = (st.st_mtime_ns, st.st_size)
        changed = False
        for path in list(self._stamps):
            if path not in found:
                del self._stamps[path]
                self._docs.pop(path, None)
                self._problems.pop(path, None)
                changed = True
        for path, stamp in found.items():
            if self._stamps.get(path) == stamp:
                continue
            self._stamps[path] = stamp
            changed = True
            self._read(path)
        return changed

    def _read(self, path: Path) -> None:
        origin = str(path.relative_to(self.root))
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            self._problems[path] = StoredDocument(Source(origin), None, problem=f"cannot read: {exc}")
            return
        docs: list[StoredDocument] = []
        for d in parse_stream(text):
            source = Source(origin, d.document, d.line, d.lines)
            if d.problem is not None:
                self._problems[path] = StoredDocument(source, None, problem=d.problem)
                return  # keep the documents last read from this file
            docs.append(StoredDocument(source, d.body))
        self._problems.pop(path, None)
        self._docs[path] = docs

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


__all__ = ["FilesConfigStore"]
