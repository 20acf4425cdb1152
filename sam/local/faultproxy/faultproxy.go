// Package faultproxy is a TCP proxy that injects the failures a database
// client meets in production: the server stops (connections are reset and
// new ones refused), freezes (bytes stop flowing both ways, as when the
// server's processes are SIGSTOPped or the network partitions), and comes
// back. Tests put it between the broker and a real PostgreSQL to prove that
// every dependency failure is a bounded 503, never a 500 or a hang.
//
//	p := faultproxy.StartTB(t, pg.Addr())
//	// point the broker at p.Port()
//	p.Stop()   // connection refused / reset
//	p.Start()  // back
//	p.Freeze() // accepted, then silence
//	p.Thaw()
package faultproxy

import (
	"fmt"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from a loopback listener to a target.
type Proxy struct {
	target string
	port   int

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]struct{}
	frozen   bool
	thawed   chan struct{} // closed on Thaw
	stopped  bool
	accepted int
}

// StartTB starts a proxy to target ("host:port") and closes it at the end
// of the test.
func StartTB(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := New(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// New starts a proxy to target on a free loopback port.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: %w", err)
	}
	p := &Proxy{target: target, port: ln.Addr().(*net.TCPAddr).Port, conns: map[net.Conn]struct{}{}, thawed: make(chan struct{})}
	close(p.thawed)
	p.serve(ln)
	return p, nil
}

// Port is the proxy's port on 127.0.0.1 (the same across Stop and Start).
func (p *Proxy) Port() int { return p.port }

// Addr is "127.0.0.1:PORT".
func (p *Proxy) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.port) }

// Accepted counts the connections accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *Proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.stopped {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.conns[c] = struct{}{}
			p.accepted++
			p.mu.Unlock()
			go p.forward(c)
		}
	}()
}

func (p *Proxy) forward(client net.Conn) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		p.drop(client)
		return
	}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		_ = server.Close()
		p.drop(client)
		return
	}
	p.conns[server] = struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				p.waitThaw()
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
			if err != nil {
				break
			}
		}
		done <- struct{}{}
	}
	go pipe(server, client)
	go pipe(client, server)
	<-done
	p.drop(client)
	p.drop(server)
}

// waitThaw blocks while the proxy is frozen.
func (p *Proxy) waitThaw() {
	p.mu.Lock()
	ch := p.thawed
	p.mu.Unlock()
	<-ch
}

func (p *Proxy) drop(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // a reset, as when the server's host goes away
	}
	_ = c.Close()
}

// Stop makes the database unreachable: open connections are reset and new
// ones are closed at once (clients see connection refused or reset).
func (p *Proxy) Stop() {
	p.mu.Lock()
	p.stopped = true
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		p.drop(c)
	}
}

// Start lets connections through again after Stop.
func (p *Proxy) Start() {
	p.mu.Lock()
	p.stopped = false
	p.mu.Unlock()
}

// Freeze stops every byte in both directions, on open and new connections,
// until Thaw: the database neither answers nor fails.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen {
		p.frozen = true
		p.thawed = make(chan struct{})
	}
}

// Thaw lets bytes flow again after Freeze.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		p.frozen = false
		close(p.thawed)
	}
}

// Close stops the proxy for good.
func (p *Proxy) Close() {
	p.Thaw()
	p.Stop()
	p.mu.Lock()
	ln := p.ln
	p.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
}
