"""A grpcio bookstore server from ``bookstore.proto``'s generated stubs (compiled at start with
grpcio-tools), for the gRPC-JSON transcoding tests.

Shelves 1 (fiction) and 2 (history) hold a few books; CreateShelf / CreateBook answer with what
they were given (ids assigned), CreateBooks the books it was streamed, Chat each message it was
streamed (its text numbered); Fail aborts with the status code and message it was asked for (and
``google.rpc`` details with ``with_details``); Slow sleeps; Echo answers its request, ``metadata``
set to the ``x-client-tag`` and ``x-envoy-original-path`` it received; PutCover keeps a shelf's
cover (a ``google.api.HttpBody``) and GetCover answers it.

Usage: ``python bookstore_server.py [--port N]``; prints ``READY <port>`` once serving on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from bookstore_build import build

OUT = Path(tempfile.mkdtemp(prefix="bookstore-stubs-"))
build(OUT, stubs=True)
sys.path.insert(0, str(OUT))
import bookstore_pb2 as pb  # noqa: E402
import bookstore_pb2_grpc as pb_grpc  # noqa: E402
from google.api import httpbody_pb2  # noqa: E402
from google.protobuf import any_pb2, empty_pb2  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402

BOOKS = {
    1: [
        pb.Book(
            name="shelves/1/books/1",
            author="le guin",
            title="The Dispossessed",
            page_count=387,
            genre=pb.FICTION,
            tags=["sf", "classic"],
            price=9.5,
            in_print=True,
            isbn=9780061054884,
        ),
        pb.Book(
            name="shelves/1/books/2",
            author="lem",
            title="Solaris",
            page_count=204,
            genre=pb.FICTION,
            tags=["sf"],
            price=7.25,
            in_print=False,
            isbn=2**60,
        ),
    ],
    2: [pb.Book(name="shelves/2/books/1", author="beard", title="SPQR", page_count=608, genre=pb.HISTORY)],
}
THEMES = {1: "fiction", 2: "history"}
COVERS: dict[int, bytes] = {}


class Bookstore(pb_grpc.BookstoreServicer):  # type: ignore[misc,name-defined]
    def ListShelves(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ListShelvesResponse(shelves=[pb.Shelf(id=i, theme=t) for i, t in THEMES.items()])

    def CreateShelf(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.Shelf(id=100 + len(request.shelf.theme), theme=request.shelf.theme)

    def GetShelf(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.shelf not in THEMES:
            context.abort(grpc.StatusCode.NOT_FOUND, f"shelf {request.shelf} not found")
        return pb.Shelf(id=request.shelf, theme=THEMES[request.shelf])

    def ListBooks(self, request: Any, context: grpc.ServicerContext) -> Any:
        books = [b for b in BOOKS.get(request.shelf, []) if not request.author or b.author == request.author]
        if request.tags:
            books = [b for b in books if set(request.tags) <= set(b.tags)]
        if request.HasField("filter"):
            books = [b for b in books if b.in_print == request.filter.in_print]
        if request.page_size:
            books = books[: request.page_size]
        return pb.ListBooksResponse(books=books, next_page_token="")

    def CreateBook(self, request: Any, context: grpc.ServicerContext) -> Any:
        book = pb.Book()
        book.CopyFrom(request.book)
        book.name = f"shelves/{request.shelf}/books/9"
        return book

    def UpdateBook(self, request: Any, context: grpc.ServicerContext) -> Any:
        return request.book

    def PublishBook(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.Book(name=request.name, in_print=True)

    def SearchBooks(self, request: Any, context: grpc.ServicerContext) -> Any:
        found = [b for shelf in BOOKS.values() for b in shelf if request.query in b.title.lower()]
        yield from found[: request.limit or None]

    def Fail(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.with_details:
            detail = any_pb2.Any()
            detail.Pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field="code", description="asked to fail")
                    ]
                )
            )
            status = status_pb2.Status(code=request.code, message=request.message, details=[detail])
            context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(grpc.StatusCode(_code(request.code)), request.message)

    def Slow(self, request: Any, context: grpc.ServicerContext) -> Any:
        deadline = time.monotonic() + request.ms / 1000
        while time.monotonic() < deadline and context.is_active():
            time.sleep(0.01)
        return empty_pb2.Empty()

    def Echo(self, request: Any, context: grpc.ServicerContext) -> Any:
        meta = dict(context.invocation_metadata())
        reply = pb.EchoRequest()
        reply.CopyFrom(request)
        reply.metadata = f"{meta.get('x-client-tag', '')} {meta.get('x-envoy-original-path', '')}"
        return reply

    def CreateBooks(self, requests: Any, context: grpc.ServicerContext) -> Any:
        return pb.ListBooksResponse(books=list(requests), next_page_token=f"{len(BOOKS)}")

    def Chat(self, requests: Any, context: grpc.ServicerContext) -> Any:
        for i, request in enumerate(requests):
            yield pb.EchoRequest(text=f"{request.text}:{i}", labels=request.labels)

    def GetCover(self, request: Any, context: grpc.ServicerContext) -> Any:
        return httpbody_pb2.HttpBody(content_type="image/svg+xml", data=COVERS.get(request.shelf, b"<svg/>"))

    def PutCover(self, request: Any, context: grpc.ServicerContext) -> Any:
        COVERS[request.shelf] = request.cover.data
        return pb.Shelf(id=request.shelf, theme=f"{request.cover.content_type} {len(request.cover.data)}")

    def Plain(self, request: Any, context: grpc.ServicerContext) -> Any:
        return request


class Extras(pb_grpc.ExtrasServicer):  # type: ignore[misc,name-defined]
    def ListBookItems(self, request: Any, context: grpc.ServicerContext) -> Any:
        return Bookstore().ListBooks(request, context)


def _code(number: int) -> tuple[int, str]:
    return next(c.value for c in grpc.StatusCode if c.value[0] == number)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_BookstoreServicer_to_server(Bookstore(), server)
    pb_grpc.add_ExtrasServicer_to_server(Extras(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"READY {port}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    server.stop(grace=None)


if __name__ == "__main__":
    main()
