package cli_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
)

type auditJSON struct {
	Leases []struct {
		LeaseID      string    `json:"lease_id"`
		PrincipalARN string    `json:"principal_arn"`
		Session      string    `json:"session"`
		Username     string    `json:"username"`
		IssuedAt     time.Time `json:"issued_at"`
		End          time.Time `json:"end"`
	} `json:"leases"`
	Audit []audit.Record `json:"audit"`
}

func auditRun(t *testing.T, args ...string) auditJSON {
	t.Helper()
	r := runDB(t, append([]string{"audit", "--json"}, args...)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("%v: %v", args, r)
	}
	var rep auditJSON
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v: output is not JSON: %v\n%s", args, err, r.stdout)
	}
	// The issue rows of the fixture leases (committed with each lease, as
	// the broker's are) are not what these tests look for.
	rep.Audit = slices.DeleteFunc(rep.Audit, func(r audit.Record) bool { return r.RequestID == fixtureRequestID })
	return rep
}

func (a auditJSON) ids() []string {
	var ids []string
	for _, l := range a.Leases {
		ids = append(ids, l.LeaseID)
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	if len(ids) == 0 {
		return nil
	}
	return ids
}

func TestAuditAtReturnsExactlyTheLeasesLiveAtThatInstant(t *testing.T) {
	ctx := context.Background()
	label := newLabel(t)
	t0 := time.Now().Add(-3 * time.Hour).UTC().Truncate(time.Second)
	us := time.Microsecond

	// a: live [t0, t0+10m)
	a := issue(t, label, newPrincipal(t, "a"), "fn-a", t0, 10*time.Minute)
	// b: issued for an hour, revoked (break-glass) at t0+5m: live [t0, t0+5m)
	b := issue(t, label, newPrincipal(t, "b"), "fn-b", t0, time.Hour)
	_, err := admin.Exec(ctx, "UPDATE ephemera.leases SET expires_at = $2, revoked_at = $2, revoke_reason = 'test' WHERE lease_id = $1", b.ID, t0.Add(5*time.Minute))
	must(t, err)
	// c: revoked at t0+7m without touching expires_at (t0+1h): least() must apply
	c := issue(t, label, newPrincipal(t, "c"), "fn-c", t0, time.Hour)
	_, err = admin.Exec(ctx, "UPDATE ephemera.leases SET revoked_at = $2, revoke_reason = 'test' WHERE lease_id = $1", c.ID, t0.Add(7*time.Minute))
	must(t, err)
	// d: live [t0+20m, t0+30m)
	d := issue(t, label, newPrincipal(t, "d"), "fn-d", t0.Add(20*time.Minute), 10*time.Minute)
	// another database's lease at the same time: never listed with --database
	issue(t, newLabel(t), newPrincipal(t, "x"), "fn-x", t0, time.Hour)

	for _, tc := range []struct {
		name string
		at   time.Time
		want []string
	}{
		{"1µs before issue", t0.Add(-us), nil},
		{"at the issue instant", t0, sorted(a.ID, b.ID, c.ID)},
		{"1µs before b's revocation", t0.Add(5*time.Minute - us), sorted(a.ID, b.ID, c.ID)},
		{"at b's revocation instant", t0.Add(5 * time.Minute), sorted(a.ID, c.ID)},
		{"at c's revocation instant (before its expiry)", t0.Add(7 * time.Minute), sorted(a.ID)},
		{"1µs before a's expiry", t0.Add(10*time.Minute - us), sorted(a.ID)},
		{"at a's expiry instant", t0.Add(10 * time.Minute), nil},
		{"at d's issue instant", t0.Add(20 * time.Minute), sorted(d.ID)},
		{"at d's expiry instant", t0.Add(30 * time.Minute), nil},
	} {
		rep := auditRun(t, "--database", label, "--at", tc.at.Format(time.RFC3339Nano))
		if got := rep.ids(); !slices.Equal(got, tc.want) {
			t.Errorf("%s (%s): got %v, want %v", tc.name, tc.at.Format(time.RFC3339Nano), got, tc.want)
		}
	}

	// The report carries who, and the end of access.
	rep := auditRun(t, "--database", label, "--at", t0.Add(6*time.Minute).Format(time.RFC3339))
	for _, l := range rep.Leases {
		switch l.LeaseID {
		case a.ID:
			if l.Session != "fn-a" || l.PrincipalARN != a.PrincipalARN || l.Username != a.Username || !l.End.Equal(t0.Add(10*time.Minute)) {
				t.Errorf("lease a: %+v", l)
			}
		case c.ID:
			if !l.End.Equal(t0.Add(7 * time.Minute)) {
				t.Errorf("lease c ends at its revocation: %+v", l)
			}
		}
	}

	// Audit decisions within the window (default 5m) come with the table.
	must(t, lease.NewStore(admin, label).AppendAudit(ctx, audit.Record{Time: t0.Add(time.Minute), RequestID: "r1", Event: "issue", Decision: "deny",
		Reason: "access_denied", PrincipalARN: "arn:aws:iam::123456789012:role/intruder", Session: "evil-fn", Database: label, DBRole: "readonly"}))
	must(t, lease.NewStore(admin, label).AppendAudit(ctx, audit.Record{Time: t0.Add(time.Hour), RequestID: "r2", Event: "issue", Decision: "allow",
		PrincipalARN: a.PrincipalARN, Database: label, DBRole: "readonly", Policies: []string{"p"}}))
	rep = auditRun(t, "--database", label, "--at", t0.Add(2*time.Minute).Format(time.RFC3339))
	if len(rep.Audit) != 1 || rep.Audit[0].RequestID != "r1" || rep.Audit[0].Decision != "deny" {
		t.Errorf("audit rows around the instant: %+v", rep.Audit)
	}

	// The text form: a table of the leases, then the audit decisions.
	r := runDB(t, "audit", "--database", label, "--at", t0.Add(2*time.Minute).Format(time.RFC3339))
	if r.code != 0 {
		t.Fatal(r)
	}
	for _, want := range []string{"Leases live at " + t0.Add(2*time.Minute).Format(time.RFC3339) + " (database " + label + "): 3",
		"PRINCIPAL", "FUNCTION", "fn-a", a.Username, b.ID, "revoke: test", "expiry",
		"Audit decisions from", "access_denied", "evil-fn"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Index(r.stdout, "Audit decisions") < strings.Index(r.stdout, a.Username) {
		t.Errorf("audit decisions must come below the lease table:\n%s", r.stdout)
	}
}

func TestAuditPrincipalSince(t *testing.T) {
	ctx := context.Background()
	label := newLabel(t)
	p, q := newPrincipal(t, "p"), newPrincipal(t, "q")
	now := time.Now().UTC()
	live := issue(t, label, p, "fn-p", now.Add(-time.Hour), 2*time.Hour)
	endedRecently := issue(t, label, p, "fn-p", now.Add(-5*time.Hour), time.Hour)
	elsewhere := issue(t, newLabel(t), p, "fn-p", now.Add(-time.Hour), 2*time.Hour)
	old := issue(t, label, p, "fn-p", now.Add(-72*time.Hour), 10*time.Minute)
	other := issue(t, label, q, "fn-q", now.Add(-time.Hour), 2*time.Hour)
	for _, rec := range []audit.Record{
		{Time: now.Add(-time.Hour), RequestID: "p-recent", Event: "issue", Decision: "allow", PrincipalARN: p, Session: "fn-p", Database: label, DBRole: "readonly", LeaseID: live.ID, Policies: []string{"orders-api"}},
		{Time: now.Add(-48 * time.Hour), RequestID: "p-old", Event: "issue", Decision: "allow", PrincipalARN: p, Database: label},
		{Time: now.Add(-time.Hour), RequestID: "q-recent", Event: "issue", Decision: "allow", PrincipalARN: q, Database: label},
	} {
		must(t, lease.NewStore(admin, label).AppendAudit(ctx, rec))
	}

	rep := auditRun(t, "--principal", p, "--since", "24h")
	if got, want := rep.ids(), sorted(live.ID, endedRecently.ID, elsewhere.ID); !slices.Equal(got, want) {
		t.Errorf("leases: got %v, want %v (old %s, q's %s)", got, want, old.ID, other.ID)
	}
	for _, l := range rep.Leases {
		if l.PrincipalARN != p {
			t.Errorf("another principal's lease: %+v", l)
		}
	}
	if len(rep.Audit) != 1 || rep.Audit[0].RequestID != "p-recent" || rep.Audit[0].PrincipalARN != p ||
		!slices.Equal(rep.Audit[0].Policies, []string{"orders-api"}) {
		t.Errorf("audit rows: %+v", rep.Audit)
	}

	// --database narrows; an RFC 3339 --since works too.
	rep = auditRun(t, "--principal", p, "--database", label, "--since", now.Add(-2*time.Hour).Format(time.RFC3339))
	if got, want := rep.ids(), sorted(live.ID); !slices.Equal(got, want) {
		t.Errorf("--database: got %v, want %v", got, want)
	}

	r := runDB(t, "audit", "--principal", p, "--since", "24h")
	if r.code != 0 {
		t.Fatal(r)
	}
	for _, want := range []string{live.Username, elsewhere.Username, "orders-api", "TIME", "EVENT", "DECISION", "REASON", "POLICIES"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, other.Username) || strings.Contains(r.stdout, q) || strings.Contains(r.stdout, old.Username) {
		t.Errorf("text output shows another principal or an old lease:\n%s", r.stdout)
	}
}
