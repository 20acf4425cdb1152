package cli_test

import (
	"context"
	"os"
	"os/user"
	"strings"
	"testing"
	"time"
)

// operator is who the CLI records for a break-glass revocation.
func operator(t *testing.T) string {
	t.Helper()
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

type leaseRow struct {
	revoked bool
	reason  string
}

func leaseRowOf(t *testing.T, id string) leaseRow {
	t.Helper()
	var r leaseRow
	must(t, admin.QueryRow(context.Background(), `SELECT revoked_at IS NOT NULL, coalesce(revoke_reason, '')
		FROM ephemera.leases WHERE lease_id = $1`, id).Scan(&r.revoked, &r.reason))
	return r
}

type auditRow struct {
	requestID, event, decision, reason, principal, session, database, username string
}

// auditRowsOf returns the audit rows of a lease after its issue.
func auditRowsOf(t *testing.T, leaseID string) []auditRow {
	t.Helper()
	rows, err := admin.Query(context.Background(), `SELECT request_id, event, decision, reason, principal_arn, session, database, username
		FROM ephemera.audit_log WHERE lease_id = $1 AND event <> 'issue' ORDER BY id`, leaseID)
	must(t, err)
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var r auditRow
		must(t, rows.Scan(&r.requestID, &r.event, &r.decision, &r.reason, &r.principal, &r.session, &r.database, &r.username))
		out = append(out, r)
	}
	must(t, rows.Err())
	return out
}

func TestRevokeLease(t *testing.T) {
	label := newLabel(t)
	p := newPrincipal(t, "orders-api")
	l := issue(t, label, p, "orders-api-fn", time.Now(), time.Hour)
	keep := issue(t, label, p, "orders-api-fn", time.Now(), time.Hour)
	op := operator(t)

	r := runDB(t, "revoke", "--lease", l.ID)
	if r.code != 0 {
		t.Fatal(r)
	}
	if !strings.HasPrefix(r.stdout, "1 lease revoked (break-glass by "+op+").\n") || !strings.Contains(r.stdout, l.Username) {
		t.Errorf("output: %v", r)
	}
	if roleExists(t, l.Username) {
		t.Error("the role still exists")
	}
	if row := leaseRowOf(t, l.ID); !row.revoked || row.reason != "break-glass by "+op {
		t.Errorf("lease row: %+v", row)
	}
	rows := auditRowsOf(t, l.ID)
	if len(rows) != 1 {
		t.Fatalf("want one audit row, got %+v", rows)
	}
	if a := rows[0]; a.event != "revoke" || a.decision != "allow" || a.reason != "break_glass" || a.principal != p ||
		a.session != "operator:"+op || a.database != label || a.username != l.Username || !strings.HasPrefix(a.requestID, "cli-") {
		t.Errorf("audit row: %+v", a)
	}
	if !strings.Contains(r.stderr, `"session":"operator:`+op+`"`) {
		t.Errorf("no audit JSON line on stderr: %v", r)
	}
	if !roleExists(t, keep.Username) || leaseRowOf(t, keep.ID).revoked {
		t.Error("another lease of the principal was revoked")
	}

	// Idempotent: nothing more happens, exit 0.
	r = runDB(t, "revoke", "--lease", l.ID, "--database", label)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "0 leases revoked, 1 already revoked.") || !strings.Contains(r.stdout, "already revoked") {
		t.Errorf("second revoke: %v", r)
	}
	if row := leaseRowOf(t, l.ID); row.reason != "break-glass by "+op {
		t.Errorf("the second revoke changed the lease: %+v", row)
	}

	// Unknown lease: one line, exit 1.
	for _, args := range [][]string{
		{"revoke", "--lease", "00000000-0000-4000-8000-000000000000"},
		{"revoke", "--lease", keep.ID, "--database", "not-" + label},
	} {
		r = runDB(t, args...)
		if r.code != 1 || r.stdout != "" || len(lines(r.stderr)) != 1 || !strings.HasPrefix(r.stderr, "ephemera: no such lease ") {
			t.Errorf("%v: %v", args, r)
		}
	}
}

func TestRevokePrincipal(t *testing.T) {
	label := newLabel(t)
	p, q := newPrincipal(t, "compromised"), newPrincipal(t, "bystander")
	now := time.Now()
	p1 := issue(t, label, p, "fn-1", now, time.Hour)
	p2 := issue(t, label, p, "fn-2", now.Add(-2*time.Hour), time.Minute) // expired, not reaped yet
	pElsewhere := issue(t, newLabel(t), p, "fn-1", now, time.Hour)
	q1 := issue(t, label, q, "fn-q", now, time.Hour)

	r := runDB(t, "revoke", "--principal", p, "--database", label)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "2 leases revoked") {
		t.Fatal(r)
	}
	for _, l := range [...]struct{ id, user string }{{p1.ID, p1.Username}, {p2.ID, p2.Username}} {
		if roleExists(t, l.user) || !leaseRowOf(t, l.id).revoked {
			t.Errorf("lease %s not revoked", l.id)
		}
		rows := auditRowsOf(t, l.id)
		if len(rows) != 1 || rows[0].event != "admin_revoke" || rows[0].reason != "break_glass" || rows[0].session != "operator:"+operator(t) {
			t.Errorf("audit rows of %s: %+v", l.id, rows)
		}
	}
	for _, l := range [...]struct{ id, user string }{{q1.ID, q1.Username}, {pElsewhere.ID, pElsewhere.Username}} {
		if !roleExists(t, l.user) || leaseRowOf(t, l.id).revoked {
			t.Errorf("lease %s was revoked: another principal's, or outside --database", l.id)
		}
	}

	// Without --database: every database name; then nothing is left.
	r = runDB(t, "revoke", "--principal", p)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "1 lease revoked") || !strings.Contains(r.stdout, pElsewhere.ID) {
		t.Errorf("all databases: %v", r)
	}
	r = runDB(t, "revoke", "--principal", p, "--json")
	if r.code != 0 || r.stdout != "" {
		t.Errorf("idempotent: %v", r)
	}
	r = runDB(t, "revoke", "--principal", p, "--database", label)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "0 leases revoked: "+p+" holds no unrevoked lease in database "+label) {
		t.Errorf("idempotent: %v", r)
	}
	if leaseRowOf(t, q1.ID).revoked {
		t.Error("the bystander's lease was revoked")
	}
}
