// adsload: the simulated sidecars of benchmarks/pilot_scale.py in Go, so that the load generator is
// not the limit. Each client has its own HTTP/2 connection and subscribes as an Envoy sidecar does
// (wildcard CDS and LDS, EDS for every cluster, RDS for its listener's route config), ACKing every
// response; state of the world or delta. Protobuf is encoded and decoded by hand (only the few
// fields ADS needs), so the program needs nothing but grpc-go.
//
// It speaks pilot_scale.py's worker protocol: prints {"ready": N}, then reads "PHASE T0" lines and
// answers each with one JSON line once every client reached the phase's condition.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

const (
	prefix   = "type.googleapis.com/"
	cluster  = prefix + "envoy.config.cluster.v3.Cluster"
	listener = prefix + "envoy.config.listener.v3.Listener"
	route    = prefix + "envoy.config.route.v3.RouteConfiguration"
	endpoint = prefix + "envoy.config.endpoint.v3.ClusterLoadAssignment"
	ads      = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
)

var short = map[string]string{cluster: "cds", listener: "lds", route: "rds", endpoint: "eds"}

type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// --- protobuf wire format, the little of it ADS needs ---------------------------------------------

func appendVarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }

func appendBytes(b []byte, field int, data []byte) []byte {
	b = appendVarint(b, uint64(field<<3|2))
	b = appendVarint(b, uint64(len(data)))
	return append(b, data...)
}

func appendString(b []byte, field int, s string) []byte { return appendBytes(b, field, []byte(s)) }

// node: Node{id, cluster, metadata: Struct{"sofamesh.outbound_port": 15001}}
func node(id string) []byte {
	var value []byte
	value = appendVarint(value, uint64(2<<3|1)) // Value.number_value (double)
	value = binary.LittleEndian.AppendUint64(value, math.Float64bits(15001))
	var entry []byte
	entry = appendString(entry, 1, "sofamesh.outbound_port")
	entry = appendBytes(entry, 2, value)
	var meta []byte
	meta = appendBytes(meta, 1, entry)
	var n []byte
	n = appendString(n, 1, id)
	n = appendString(n, 2, "bench")
	n = appendBytes(n, 3, meta)
	return n
}

type response struct {
	version, typeURL, nonce string
	resources               int
}

func parseResponse(b []byte) (r response, err error) {
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return r, fmt.Errorf("bad key")
		}
		b = b[n:]
		switch key & 7 {
		case 0:
			_, n = binary.Uvarint(b)
			b = b[n:]
		case 1:
			b = b[8:]
		case 5:
			b = b[4:]
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || int(l) > len(b)-n {
				return r, fmt.Errorf("bad length")
			}
			data := b[n : n+int(l)]
			b = b[n+int(l):]
			switch key >> 3 { // same numbers in DiscoveryResponse and DeltaDiscoveryResponse
			case 1:
				r.version = string(data)
			case 2:
				r.resources++
			case 4:
				r.typeURL = string(data)
			case 5:
				r.nonce = string(data)
			}
		default:
			return r, fmt.Errorf("bad wire type")
		}
	}
	return r, nil
}

// --- one simulated sidecar -----------------------------------------------------------------------

type seen struct {
	at        float64
	resources int
}

type client struct {
	id       int
	delta    bool
	node     []byte
	mu       sync.Mutex
	clusters []string
	seen     map[string]seen
	bytes    int
	failures map[string]int
}

func now() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func (c *client) request(typeURL string, names []string, nonce, version string) []byte {
	var b []byte
	if c.delta { // DeltaDiscoveryRequest{node=1, type_url=2, resource_names_subscribe=3, response_nonce=6}
		b = appendBytes(b, 1, c.node)
		b = appendString(b, 2, typeURL)
		if nonce == "" {
			for _, n := range names {
				b = appendString(b, 3, n)
			}
		} else {
			b = appendString(b, 6, nonce)
		}
		return b
	}
	// DiscoveryRequest{version_info=1, node=2, resource_names=3, type_url=4, response_nonce=5}
	if version != "" {
		b = appendString(b, 1, version)
	}
	b = appendBytes(b, 2, c.node)
	for _, n := range names {
		b = appendString(b, 3, n)
	}
	b = appendString(b, 4, typeURL)
	if nonce != "" {
		b = appendString(b, 5, nonce)
	}
	return b
}

func (c *client) run(addr string) {
	for {
		err := c.stream(addr)
		code := "OK"
		if err != nil {
			s, _ := status.FromError(err)
			msg := s.Message()
			if len(msg) > 60 {
				msg = msg[:60]
			}
			code = fmt.Sprintf("%s: %s", codeName(s.Code().String()), msg)
		}
		c.mu.Lock()
		c.failures[code]++
		c.mu.Unlock()
		time.Sleep(time.Second) // as Envoy does before opening the stream again
	}
}

// codeName spells a status code as grpcio does ("Canceled" -> "CANCELLED", "DeadlineExceeded" ->
// "DEADLINE_EXCEEDED"), so that both workers' failures add up.
func codeName(goName string) string {
	if goName == "Canceled" {
		return "CANCELLED"
	}
	var b strings.Builder
	for i, r := range goName {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

const envoyWindow = 256 << 20

func (c *client) stream(addr string) error {
	// HTTP/2 windows as Envoy's defaults (initial_stream_window_size and
	// initial_connection_window_size: 256 MiB), not grpc-go's 64 KiB
	cc, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}),
		grpc.MaxCallRecvMsgSize(64<<20)), grpc.WithInitialWindowSize(envoyWindow),
		grpc.WithInitialConnWindowSize(envoyWindow))
	if err != nil {
		return err
	}
	defer cc.Close()
	method := "StreamAggregatedResources"
	if c.delta {
		method = "DeltaAggregatedResources"
	}
	st, err := cc.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, ads+method)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.seen = map[string]seen{}
	c.mu.Unlock()
	send := func(b []byte) error { return st.SendMsg(&b) }
	if err := send(c.request(cluster, nil, "", "")); err != nil {
		return err
	}
	if err := send(c.request(listener, nil, "", "")); err != nil {
		return err
	}
	askedEDS, askedRDS := false, false
	for {
		var msg []byte
		if err := st.RecvMsg(&msg); err != nil {
			return err
		}
		r, err := parseResponse(msg)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.bytes += len(msg)
		c.seen[r.typeURL] = seen{now(), r.resources}
		clusters := c.clusters
		c.mu.Unlock()
		version := r.version
		if c.delta {
			version = ""
		}
		var names []string
		switch r.typeURL {
		case endpoint:
			names = clusters
		case route:
			names = []string{"outbound|15001"}
		}
		if err := send(c.request(r.typeURL, names, r.nonce, version)); err != nil { // ACK
			return err
		}
		if r.typeURL == cluster && !askedEDS {
			askedEDS = true
			if err := send(c.request(endpoint, clusters, "", "")); err != nil {
				return err
			}
		}
		if r.typeURL == listener && !askedRDS {
			askedRDS = true
			if err := send(c.request(route, []string{"outbound|15001"}, "", "")); err != nil {
				return err
			}
		}
	}
}

// --- phases, as pilot_scale.py's Python worker --------------------------------------------------

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func main() {
	addr := flag.String("addr", "127.0.0.1:15010", "Pilot's xDS address")
	n := flag.Int("clients", 100, "simulated sidecars")
	first := flag.Int("first", 0, "number of the first client (node ids sim-N)")
	services := flag.Int("services", 1000, "services in the mesh: EDS subscribes to every cluster")
	delta := flag.Bool("delta", false, "delta ADS instead of state of the world")
	timeout := flag.Float64("timeout", 300, "seconds a phase may take")
	flag.Parse()
	clusters := make([]string, *services)
	for s := range clusters {
		clusters[s] = fmt.Sprintf("outbound|80|svc-%04d", s)
	}
	clients := make([]*client, *n)
	for i := range clients {
		id := fmt.Sprintf("sim-%d", *first+i)
		clients[i] = &client{id: *first + i, delta: *delta, node: node(id), clusters: clusters,
			seen: map[string]seen{}, failures: map[string]int{}}
	}
	out := json.NewEncoder(os.Stdout)
	out.Encode(map[string]int{"ready": *n})
	in := bufio.NewScanner(os.Stdin)
	policy := map[string]string{"dr": cluster, "vs": route, "weights": route}
	for in.Scan() {
		fields := strings.Fields(in.Text())
		if len(fields) == 0 || fields[0] == "quit" {
			break
		}
		phase, t0 := fields[0], 0.0
		if len(fields) > 1 {
			t0, _ = strconv.ParseFloat(fields[1], 64)
		}
		var done func(c *client) bool
		switch {
		case phase == "sync":
			for _, c := range clients {
				go c.run(*addr)
			}
			done = func(c *client) bool {
				for _, t := range []string{cluster, endpoint, listener, route} {
					if _, ok := c.seen[t]; !ok {
						return false
					}
				}
				return c.seen[endpoint].resources == *services && c.seen[cluster].resources == *services
			}
		case phase == "instance":
			done = func(c *client) bool { return c.seen[endpoint].at > t0 }
		case policy[phase] != "":
			done = func(c *client) bool { return c.seen[policy[phase]].at > t0 }
		default: // "service": a new service appears in CDS and RDS
			more := append(append([]string(nil), clusters...), "outbound|80|svc-new")
			cds := *services + 1
			if *delta {
				cds = 1
			}
			for _, c := range clients {
				c.mu.Lock()
				c.clusters = more
				c.mu.Unlock()
			}
			done = func(c *client) bool { return c.seen[cluster].resources == cds && c.seen[route].at > t0 }
		}
		deadline := time.Now().Add(time.Duration(*timeout * float64(time.Second)))
		for {
			all := true
			for _, c := range clients {
				c.mu.Lock()
				ok := done(c)
				c.mu.Unlock()
				if !ok {
					all = false
					break
				}
			}
			if all {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "adsload: phase %s not done by every client after %.0fs\n", phase, *timeout)
				os.Exit(1)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // anything else this change re-sends arrives meanwhile
		at := 0.0
		resent := map[string]bool{}
		failures := map[string]int{}
		for _, c := range clients {
			c.mu.Lock()
			for t, s := range c.seen {
				if s.at > at {
					at = s.at
				}
				if s.at > t0 {
					name := short[t]
					if name == "" {
						name = t
					}
					resent[name] = true
				}
			}
			for code, k := range c.failures {
				failures[code] += k
			}
			c.mu.Unlock()
		}
		types := []string{}
		for t := range resent {
			types = append(types, t)
		}
		sort.Strings(types)
		clients[0].mu.Lock()
		size := clients[0].bytes
		clients[0].mu.Unlock()
		out.Encode(map[string]interface{}{"phase": phase, "at": at, "bytes": size, "resent": types,
			"failures": failures, "cpu_s": cpuSeconds()})
	}
}
