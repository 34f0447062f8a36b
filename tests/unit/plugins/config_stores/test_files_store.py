"""The files config store on a real directory, scan by scan: a changed file is read once it settled,
so a file caught half-written (an editor's truncate, then write) never removes what it held."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sofamesh.plugins.config_stores.files.store import FilesConfigStore

VS = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}}}\nspec: {{hosts: [{name}]}}\n"


def _names(store: FilesConfigStore) -> list[str]:
    return [d.body["metadata"]["name"] for d in store.documents() if d.body is not None]


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))  # distinct stamps even on a coarse file-system clock


def test_the_first_scan_reads_every_file_and_a_change_is_read_once_it_settled(tmp_path: Path) -> None:
    f = tmp_path / "vs.yaml"
    _write(f, VS.format(name="reviews"), 1_000_000_000)
    store = FilesConfigStore("files", tmp_path)
    assert store.scan() and _names(store) == ["reviews"]
    assert not store.scan()  # nothing changed

    _write(f, "", 2_000_000_000)  # truncated: the writer has not written yet
    assert not store.scan() and _names(store) == ["reviews"]
    _write(f, VS.format(name="ratings"), 3_000_000_000)  # written: changed again since the last scan
    assert not store.scan() and _names(store) == ["reviews"]
    assert store.scan() and _names(store) == ["ratings"]  # the same as the scan before: read

    _write(f, "", 4_000_000_000)  # emptied on purpose: taken once it stays empty
    assert not store.scan() and _names(store) == ["ratings"]
    assert store.scan() and _names(store) == []


def test_a_new_file_and_a_removed_one(tmp_path: Path) -> None:
    store = FilesConfigStore("files", tmp_path)
    assert not store.scan() and _names(store) == []
    _write(tmp_path / "a.yaml", VS.format(name="a"), 1_000_000_000)
    assert not store.scan()
    assert store.scan() and _names(store) == ["a"]
    (tmp_path / "a.yaml").unlink()
    assert store.scan() and _names(store) == []  # a removal needs no settling


def test_a_read_during_which_the_file_changed_is_thrown_away(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "vs.yaml"
    _write(f, VS.format(name="reviews"), 1_000_000_000)
    store = FilesConfigStore("files", tmp_path)
    store.scan()
    _write(f, VS.format(name="ratings"), 2_000_000_000)
    assert not store.scan()
    real = Path.read_text

    def read_then_changed(self: Path, *args: object, **kwargs: object) -> str:
        text = real(self)
        _write(f, "", 3_000_000_000)  # a writer truncates it right after our read
        return text

    monkeypatch.setattr(Path, "read_text", read_then_changed)
    assert not store.scan() and _names(store) == ["reviews"]  # what was read is not taken
    monkeypatch.setattr(Path, "read_text", real)
    _write(f, VS.format(name="details"), 4_000_000_000)
    assert not store.scan()
    assert store.scan() and _names(store) == ["details"]
