"""HTTP/2 stream events: ``StreamReset`` and ``WindowOpened`` now live in the core event set
(``sofamesh.core.events``); they are re-exported here for code written against this module."""

from __future__ import annotations

from sofamesh.core.events import StreamReset, WindowOpened

__all__ = ["StreamReset", "WindowOpened"]
