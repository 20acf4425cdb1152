package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/audit"
)

func TestWriteLine(t *testing.T) {
	var buf bytes.Buffer
	l := audit.New(&buf, nil, nil)
	err := l.Write(context.Background(), audit.Record{
		Time: time.Date(2026, 11, 17, 3, 0, 0, 0, time.FixedZone("x", 3600)), RequestID: "r1", Event: audit.EventIssue,
		Decision: audit.Deny, Reason: "access_denied", Database: "unconfigured",
	})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON line: %v: %s", err, buf.Bytes())
	}
	want := []string{"time", "request_id", "event", "decision", "reason", "principal_arn", "account", "session", "source_ip",
		"database", "db_role", "username", "lease_id", "ttl_seconds", "policies", "latency_ms"}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("audit line lacks %q", k)
		}
	}
	if got["time"] != "2026-11-17T02:00:00Z" || got["msg"] != "audit" || got["decision"] != "deny" {
		t.Errorf("line %s", buf.Bytes())
	}
	if p, ok := got["policies"].([]any); !ok || len(p) != 0 {
		t.Errorf("policies %v, want []", got["policies"])
	}
	if bytes.Count(buf.Bytes(), []byte("\n")) != 1 {
		t.Errorf("want exactly one line")
	}
}
