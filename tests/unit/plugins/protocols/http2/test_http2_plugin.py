"""The ``http2`` entry point registers the codec on the project's own engine; an environment that
still selects the removed ``h2`` engine is refused with a message naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sofamesh.core.catalog import Catalog
from sofamesh.core.codec import CodecFactory
from sofamesh.core.errors import PluginError
from sofamesh.plugins.protocols.http2.codec import Http2CodecFactory
from sofamesh.plugins.protocols.http2.plugin import ENGINE_VARIABLE, sofamesh_register_protocols


def test_the_codec_is_registered_with_or_without_the_variable_naming_native(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (None, "native"):
        if value is None:
            monkeypatch.delenv(ENGINE_VARIABLE, raising=False)
        else:
            monkeypatch.setenv(ENGINE_VARIABLE, value)
        catalog: Catalog[CodecFactory] = Catalog("protocol")
        sofamesh_register_protocols(catalog)
        assert type(catalog.get("http2")) is Http2CodecFactory


@pytest.mark.parametrize("value, words", [("h2", "was removed"), ("nghttp2", "unknown HTTP/2 engine")])
def test_an_environment_naming_another_engine_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str, words: str
) -> None:
    monkeypatch.setenv(ENGINE_VARIABLE, value)
    with pytest.raises(PluginError, match=f"{ENGINE_VARIABLE}=.*{words}"):
        sofamesh_register_protocols(Catalog("protocol"))


def test_the_h2_package_is_not_imported_by_the_sidecar() -> None:
    code = (
        "import sys, sofamesh.plugins.protocols.http2.plugin, sofamesh.core.server\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('h2', 'hpack', 'hyperframe')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
