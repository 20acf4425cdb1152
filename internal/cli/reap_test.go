package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestReapOnce(t *testing.T) {
	label := newLabel(t)
	p := newPrincipal(t, "r")
	now := time.Now()
	expired := issue(t, label, p, "fn", now.Add(-2*time.Hour), time.Minute)
	expired2 := issue(t, label, p, "fn", now.Add(-time.Hour), time.Minute)
	live := issue(t, label, p, "fn", now, time.Hour)

	r := runDB(t, "reap", "--once", "--json", "--database", label)
	if r.code != 0 {
		t.Fatal(r)
	}
	var sum struct {
		Revoked int `json:"revoked"`
		Failed  int `json:"failed"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil || sum.Revoked != 2 || sum.Failed != 0 {
		t.Fatalf("summary %+v (%v): %v", sum, err, r)
	}
	for _, k := range []string{`"nonces_deleted":`, `"audit_pruned":`, `"duration_ms":`, `"swept":`} {
		if !strings.Contains(r.stdout, k) {
			t.Errorf("summary lacks %s: %s", k, r.stdout)
		}
	}
	for _, l := range [...]struct{ id, user string }{{expired.ID, expired.Username}, {expired2.ID, expired2.Username}} {
		if row := leaseRowOf(t, l.id); !row.revoked || row.reason != "expired" || roleExists(t, l.user) {
			t.Errorf("expired lease %s: %+v", l.id, row)
		}
		if rows := auditRowsOf(t, l.id); len(rows) != 1 || rows[0].event != "reap" {
			t.Errorf("audit rows of %s: %+v", l.id, rows)
		}
	}
	if leaseRowOf(t, live.ID).revoked || !roleExists(t, live.Username) {
		t.Error("the live lease was reaped")
	}

	// Again: nothing to do; the text summary.
	r = runDB(t, "reap", "--once", "--database", label)
	if r.code != 0 || !strings.Contains(r.stdout, "revoked         0\n") || !strings.Contains(r.stdout, "duration_ms") {
		t.Errorf("second reap: %v", r)
	}
}
