"""A real Apache Thrift client (PyPI thrift), run with the interpreter of $SOFAMESH_CACHE/venv-thrift.

    apache_peer.py PORT SEQIDS [--service S]

Calls ``Echo.echo("a<seqid>")`` once per seqid in the JSON list SEQIDS, over one framed
connection, with Apache's TBinaryProtocol (strict) and, with --service, TMultiplexedProtocol.
The args and result structs are written the way the Thrift compiler's generated Python does.
Prints one JSON list: {"ok": result, "seqid": reply seqid} or {"error": ..., "type", "message", "seqid"}.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from thrift.protocol import TBinaryProtocol, TMultiplexedProtocol
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TSocket, TTransport


def echo(proto: Any, seqid: int, text: str) -> dict[str, Any]:
    proto.writeMessageBegin("echo", TMessageType.CALL, seqid)
    proto.writeStructBegin("echo_args")
    proto.writeFieldBegin("text", TType.STRING, 1)
    proto.writeString(text)
    proto.writeFieldEnd()
    proto.writeFieldStop()
    proto.writeStructEnd()
    proto.writeMessageEnd()
    proto.trans.flush()
    _, mtype, rseqid = proto.readMessageBegin()
    if mtype == TMessageType.EXCEPTION:
        x = TApplicationException()
        x.read(proto)
        proto.readMessageEnd()
        return {"error": "TApplicationException", "type": x.type, "message": x.message, "seqid": rseqid}
    result = None
    proto.readStructBegin()
    while True:
        _, ftype, fid = proto.readFieldBegin()
        if ftype == TType.STOP:
            break
        if fid == 0 and ftype == TType.STRING:
            result = proto.readString()
        else:
            proto.skip(ftype)
        proto.readFieldEnd()
    proto.readStructEnd()
    proto.readMessageEnd()
    return {"ok": result, "seqid": rseqid}


def main(argv: list[str]) -> None:
    port, seqids = int(argv[0]), json.loads(argv[1])
    transport = TTransport.TFramedTransport(TSocket.TSocket("127.0.0.1", port))
    proto: Any = TBinaryProtocol.TBinaryProtocol(transport)
    if "--service" in argv:
        proto = TMultiplexedProtocol.TMultiplexedProtocol(proto, argv[argv.index("--service") + 1])
    transport.open()
    try:
        print(json.dumps([echo(proto, s, f"a{s}") for s in seqids]))
    finally:
        transport.close()


if __name__ == "__main__":
    main(sys.argv[1:])
