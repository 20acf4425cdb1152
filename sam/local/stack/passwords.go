package stack

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"sync"
)

// Passwords records the password of every credential a broker issued (its
// answers to POST /v1/credentials), for a test to look for in logs and output
// later. Its Wrap is an Options.Middleware; the zero value is ready to use.
type Passwords struct {
	mu   sync.Mutex
	seen map[string]bool
}

// Wrap returns h, recording the passwords of its answers.
func (p *Passwords) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/credentials" {
			h.ServeHTTP(w, r)
			return
		}
		bw := &bodyWriter{ResponseWriter: w}
		h.ServeHTTP(bw, r)
		var c struct {
			Password string `json:"password"`
		}
		if json.Unmarshal(bw.body.Bytes(), &c) == nil && c.Password != "" {
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.seen == nil {
				p.seen = map[string]bool{}
			}
			p.seen[c.Password] = true
		}
	})
}

// All returns the passwords recorded so far, in no particular order.
func (p *Passwords) All() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Collect(maps.Keys(p.seen))
}

// bodyWriter keeps a copy of the body it writes.
type bodyWriter struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *bodyWriter) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}
