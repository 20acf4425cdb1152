package trace

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// daemonHeader is the first line of every datagram the daemon accepts.
const daemonHeader = `{"format": "json", "version": 1}`

// fakeDaemon is an X-Ray daemon on a loopback UDP port: it records every
// datagram it receives.
type fakeDaemon struct {
	conn *net.UDPConn
	keep atomic.Bool // false: count datagrams but do not keep them (benchmarks)

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on each datagram
	raw     [][]byte
	docs    []map[string]any
	bad     []string // datagrams that did not follow the protocol
}

func startDaemon() (*fakeDaemon, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	d := &fakeDaemon{conn: conn, changed: make(chan struct{})}
	d.keep.Store(true)
	go d.serve()
	return d, nil
}

func (d *fakeDaemon) addr() string { return d.conn.LocalAddr().String() }

func (d *fakeDaemon) close() { d.conn.Close() }

func (d *fakeDaemon) serve() {
	buf := make([]byte, 1<<16)
	for {
		n, _, err := d.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if !d.keep.Load() {
			continue
		}
		p := bytes.Clone(buf[:n])
		d.mu.Lock()
		d.raw = append(d.raw, p)
		if doc, err := parseDatagram(p); err != nil {
			d.bad = append(d.bad, err.Error())
		} else {
			d.docs = append(d.docs, doc)
		}
		close(d.changed)
		d.changed = make(chan struct{})
		d.mu.Unlock()
	}
}

func parseDatagram(p []byte) (map[string]any, error) {
	head, body, ok := bytes.Cut(p, []byte("\n"))
	if !ok || string(head) != daemonHeader {
		return nil, fmt.Errorf("datagram without the daemon header: %.80q", p)
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("datagram body is not JSON: %v", err)
	}
	return doc, nil
}

// waitFor returns the first document for which match is true, waiting for
// it up to a generous deadline.
func (d *fakeDaemon) waitFor(t testing.TB, what string, match func(doc map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(20 * time.Second)
	seen := 0
	for {
		d.mu.Lock()
		docs, changed, bad := d.docs, d.changed, d.bad
		d.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("daemon received malformed datagrams: %q", bad)
		}
		for _, doc := range docs[seen:] {
			if match(doc) {
				return doc
			}
		}
		seen = len(docs)
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("daemon never received %s; got %d documents", what, len(docs))
		}
	}
}

// all returns the raw datagrams and parsed documents received so far.
func (d *fakeDaemon) all() ([][]byte, []map[string]any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.raw, d.docs
}

// node is one (sub)segment document.
type node map[string]any

func (n node) str(key string) string { s, _ := n[key].(string); return s }

func (n node) obj(key string) node { m, _ := n[key].(map[string]any); return m }

func (n node) children() []node {
	var out []node
	subs, _ := n["subsegments"].([]any)
	for _, s := range subs {
		if m, ok := s.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// find returns the first (sub)segment named name in the tree under n,
// n included.
func (n node) find(name string) node {
	if n.str("name") == name {
		return n
	}
	for _, c := range n.children() {
		if f := c.find(name); f != nil {
			return f
		}
	}
	return nil
}

// child returns n's direct child named name.
func (n node) child(name string) node {
	for _, c := range n.children() {
		if c.str("name") == name {
			return c
		}
	}
	return nil
}

func (n node) names() []string {
	var out []string
	for _, c := range n.children() {
		out = append(out, c.str("name"))
	}
	return out
}

func byTraceAndName(traceID, name string) func(map[string]any) bool {
	return func(doc map[string]any) bool {
		return doc["trace_id"] == traceID && doc["name"] == name
	}
}

// traceIDOf returns the Root of an X-Amzn-Trace-Id value.
func traceIDOf(h string) string {
	return headerField(h, "Root")
}

func headerField(h, key string) string {
	for part := range strings.SplitSeq(h, ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok && k == key {
			return v
		}
	}
	return ""
}

var errBoom = errors.New("boom: the step failed")
