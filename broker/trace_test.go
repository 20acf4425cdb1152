package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/internal/trace"
)

// TestTraceSegments runs an issue inside a root segment with a UDP daemon on
// loopback and checks the subsegments the operator sees, and that none
// carries the password, the signature or the session token.
func TestTraceSegments(t *testing.T) {
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	must(t, err)
	defer conn.Close()
	must(t, trace.Configure(trace.WithDaemonAddress(conn.LocalAddr().String())))

	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "orders-fn")
	p := e.proof(w)
	body, err := json.Marshal(map[string]any{"identity": p, "database": "orders", "role": "readonly", "ttl_seconds": 60})
	must(t, err)
	ctx, end := trace.BeginSegment(context.Background(), "broker")
	req := httptest.NewRequest(http.MethodPost, "/v1/credentials", bytes.NewReader(body)).WithContext(ctx)
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.broker.Handler().ServeHTTP(rec, req)
	end(nil)
	if rec.Code != http.StatusCreated {
		t.Fatalf("issue: %d %s", rec.Code, rec.Body)
	}
	var cred map[string]any
	must(t, json.Unmarshal(rec.Body.Bytes(), &cred))

	names := map[string]bool{}
	var all strings.Builder
	buf := make([]byte, 64<<10)
	deadline := time.Now().Add(5 * time.Second)
	for !names["broker"] && time.Now().Before(deadline) {
		_ = conn.SetReadDeadline(deadline)
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		_, doc, ok := strings.Cut(string(buf[:n]), "\n") // {"format":"json","version":1}\n<segment>
		if !ok {
			t.Fatalf("datagram without header line: %q", buf[:n])
		}
		all.WriteString(doc)
		collectNames(t, []byte(doc), names)
	}
	for _, want := range []string{"broker", "verify_identity", "policy", "issue_role", "audit"} {
		if !names[want] {
			t.Errorf("no (sub)segment %q; got %v", want, names)
		}
	}
	if !names["sts.us-east-1.amazonaws.com"] { // the signed Host, whatever endpoint serves it
		t.Errorf("no remote subsegment for the STS call; got %v", names)
	}
	if !hasPrefix(names, e.brokerDBName()) {
		t.Errorf("no SQL subsegment; got %v", names)
	}
	auth := p.Headers["Authorization"][0]
	secrets := map[string]string{
		"password":      cred["password"].(string),
		"signature":     auth[strings.Index(auth, "Signature=")+len("Signature="):],
		"session token": w.creds.SessionToken,
		"SCRAM":         "SCRAM-SHA-256$",
	}
	for what, s := range secrets {
		if strings.Contains(all.String(), s) {
			t.Errorf("a trace segment contains the %s", what)
		}
	}
}

func (e *env) brokerDBName() string { return pg.Database() + "@" }

func collectNames(t *testing.T, doc []byte, names map[string]bool) {
	t.Helper()
	var seg struct {
		Name        string            `json:"name"`
		Subsegments []json.RawMessage `json:"subsegments"`
	}
	if err := json.Unmarshal(doc, &seg); err != nil {
		t.Fatalf("segment is not JSON: %v", err)
	}
	names[seg.Name] = true
	for _, s := range seg.Subsegments {
		collectNames(t, s, names)
	}
}

func hasPrefix(names map[string]bool, p string) bool {
	for n := range names {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}
