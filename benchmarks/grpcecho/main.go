// grpcecho: the gRPC upstream of benchmarks/run.py's grpc group, a native one (grpc-go) so that the
// upstream never caps a proxy's load. Every method of every service answers a unary call with the
// request's message: a raw codec passes its bytes back without decoding them.
//
// Usage: grpcecho [-addr 127.0.0.1:0]; prints "READY <port>" once it listens.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
)

// rawCodec hands the message's bytes over as they are (grpc-go 1.33's CustomCodec interface).
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}

func (rawCodec) String() string { return "raw" }

// echo serves any method: one message in, the same message out, then OK.
func echo(_ interface{}, stream grpc.ServerStream) error {
	var msg []byte
	if err := stream.RecvMsg(&msg); err != nil {
		return err
	}
	return stream.SendMsg(&msg)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpcecho:", err)
		os.Exit(1)
	}
	s := grpc.NewServer(grpc.CustomCodec(rawCodec{}), grpc.UnknownServiceHandler(echo))
	fmt.Printf("READY %d\n", lis.Addr().(*net.TCPAddr).Port)
	if err := s.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "grpcecho:", err)
		os.Exit(1)
	}
}
