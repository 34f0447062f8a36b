"""Compile ``bookstore.proto`` with grpcio-tools (protoc): the descriptor set a transcoder reads
(``--include_imports``) and the Python stubs the grpcio server runs."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import google.api
from grpc_tools import protoc

PROTO = Path(__file__).with_name("bookstore.proto")


def build(out: Path, stubs: bool = False) -> Path:
    """Compile into ``out``; return the descriptor set's path (and write ``bookstore_pb2*.py`` with ``stubs``)."""
    out.mkdir(parents=True, exist_ok=True)
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    googleapis = str(Path(next(iter(google.api.__path__))).parent.parent)  # holds google/api/*.proto
    descriptor = out / "bookstore.pb"
    args = [
        "protoc",
        f"-I{PROTO.parent}",
        f"-I{googleapis}",
        f"-I{well_known}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={descriptor}",
    ]
    if stubs:
        args += [f"--python_out={out}", f"--grpc_python_out={out}"]
    code = protoc.main([*args, PROTO.name])
    if code != 0:
        raise RuntimeError(f"protoc failed ({code}) on {PROTO}")
    return descriptor
