package audit_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ephemera-sh/ephemera/broker/audit"
)

func TestWriteLine(t *testing.T) {
	var buf bytes.Buffer
	l := audit.New(&buf, nil)
	l.Line(audit.Record{
		Time: time.Date(2026, 11, 17, 3, 0, 0, 0, time.FixedZone("x", 3600)), RequestID: "r1", Event: audit.EventIssue,
		Decision: audit.Deny, Reason: "access_denied", Database: "unconfigured",
	})
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

func TestCutCallerText(t *testing.T) {
	long := strings.Repeat("é", 100) // 2 bytes each
	got := audit.CutCallerText(long)
	if len(got) != 64 || !utf8.ValidString(got) {
		t.Fatalf("cut to %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if audit.CutCallerText("readonly") != "readonly" {
		t.Fatal("short text changed")
	}
	odd := "a" + strings.Repeat("é", 40) // a boundary falls inside a rune
	if got := audit.CutCallerText(odd); len(got) != 63 || !utf8.ValidString(got) {
		t.Fatalf("cut %q to %d bytes", got, len(got))
	}
}
