"""The server name of a real ClientHello (OpenSSL's, through Python's ssl module), read from a
connection's first bytes whatever way they are split; anything else has none."""

from __future__ import annotations

import ssl

import pytest

from sofamesh.core.proxy.sni import MORE, server_name


def client_hello(sni: str | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_server_name_of_a_real_client_hello_at_every_split() -> None:
    hello = client_hello("db.Example.com")
    assert server_name(hello) == "db.example.com"
    for cut in range(len(hello)):
        assert server_name(hello[:cut]) is MORE
    assert server_name(hello + b"more bytes") == "db.example.com"


def test_no_server_name_without_sni_or_tls() -> None:
    assert server_name(client_hello(None)) is None
    assert server_name(b"GET / HTTP/1.1\r\n\r\n") is None
    assert server_name(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is None  # a handshake but not a ClientHello


def test_a_client_hello_split_over_two_records_is_read_whole() -> None:
    hello = client_hello("a.example.com")
    body = hello[5:]
    first, second = body[:40], body[40:]
    two = (
        b"\x16\x03\x01"
        + len(first).to_bytes(2, "big")
        + first
        + b"\x16\x03\x01"
        + len(second).to_bytes(2, "big")
        + second
    )
    assert server_name(two) == "a.example.com"
    assert server_name(two[:60]) is MORE
