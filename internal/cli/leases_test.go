package cli_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestLeases(t *testing.T) {
	label := newLabel(t)
	now := time.Now()
	short := issue(t, label, newPrincipal(t, "a"), "fn-a", now.Add(-time.Minute), time.Hour)
	long := issue(t, label, newPrincipal(t, "a-much-longer-role-name-for-alignment"), "orders-api-function", now, 30*time.Minute)
	expired := issue(t, label, newPrincipal(t, "old"), "fn-old", now.Add(-2*time.Hour), time.Minute)
	other := issue(t, newLabel(t), newPrincipal(t, "elsewhere"), "fn", now, time.Hour)

	r := runDB(t, "leases", "--database", label)
	if r.code != 0 || r.stderr != "" {
		t.Fatal(r)
	}
	ls := lines(r.stdout)
	if len(ls) != 3 {
		t.Fatalf("want a header and two rows: %v", r)
	}
	header := []string{"LEASE", "PRINCIPAL", "FUNCTION", "DATABASE/ROLE", "USERNAME", "ISSUED", "EXPIRES"}
	checkAligned(t, ls, header)
	if !strings.Contains(ls[1], short.ID) || !strings.Contains(ls[2], long.ID) {
		t.Errorf("want oldest first:\n%s", r.stdout)
	}
	for _, want := range []string{short.Username, long.PrincipalARN, "orders-api-function", label + "/readonly",
		short.ExpiresAt.UTC().Format(time.RFC3339)} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, expired.ID) || strings.Contains(r.stdout, other.ID) {
		t.Errorf("an expired lease or another database's lease is listed:\n%s", r.stdout)
	}

	// --all: the expired, unrevoked lease too, marked.
	r = runDB(t, "leases", "--database", label, "--all")
	ls = lines(r.stdout)
	if r.code != 0 || len(ls) != 4 {
		t.Fatalf("--all: %v", r)
	}
	checkAligned(t, ls, append(header, "STATE"))
	if !strings.Contains(ls[1], expired.ID) || !strings.HasSuffix(ls[1], "expired") || !strings.HasSuffix(ls[2], "live") {
		t.Errorf("--all does not mark the expired lease:\n%s", r.stdout)
	}

	// --json: one object per line.
	r = runDB(t, "leases", "--database", label, "--json", "--all")
	if r.code != 0 {
		t.Fatal(r)
	}
	got := map[string]map[string]any{}
	for _, l := range lines(r.stdout) {
		var obj map[string]any
		if err := json.Unmarshal([]byte(l), &obj); err != nil {
			t.Fatalf("not one JSON object per line: %v\n%s", err, r.stdout)
		}
		got[obj["lease_id"].(string)] = obj
	}
	if len(got) != 3 || got[expired.ID]["state"] != "expired" || got[long.ID]["state"] != "live" ||
		got[long.ID]["session"] != "orders-api-function" || got[long.ID]["username"] != long.Username ||
		got[long.ID]["expires_at"] != long.ExpiresAt.UTC().Format(time.RFC3339Nano) {
		t.Errorf("--json: %v", got)
	}
	for _, l := range lines(r.stdout) {
		if strings.Contains(strings.ToLower(l), "password") {
			t.Errorf("a lease line mentions a password: %s", l)
		}
	}

	// Without --database: every database name, this one's and the other's.
	r = runDB(t, "leases")
	if r.code != 0 || !strings.Contains(r.stdout, short.ID) || !strings.Contains(r.stdout, other.ID) {
		t.Errorf("all databases: %v", r)
	}
}

// checkAligned checks that every column of every row starts where its
// header does, with a space before it.
func checkAligned(t *testing.T, ls []string, header []string) {
	t.Helper()
	var starts []int
	for _, h := range header {
		i := strings.Index(ls[0], h)
		if i < 0 {
			t.Fatalf("header lacks %s: %q", h, ls[0])
		}
		starts = append(starts, i)
	}
	for _, row := range ls[1:] {
		for i, s := range starts {
			if len(row) <= s || row[s] == ' ' || (s > 0 && row[s-1] != ' ') {
				t.Errorf("column %s is not aligned in\n%s\n%s", header[i], ls[0], row)
			}
		}
	}
}
