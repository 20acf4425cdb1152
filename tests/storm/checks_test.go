package storm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// checkAnswers: no 500 ever; the only answers are 201 and 503; every 503
// carries Retry-After and the broker's error document. A 500 is reported
// with the broker's own log line (its cause), so that it can be fixed.
func checkAnswers(t *testing.T, sc scenario, rec *recorder, procs []*brokerProc) {
	t.Helper()
	rec.mu.Lock()
	for _, u := range rec.undecoded {
		t.Errorf("a 201 answer did not decode: %s", u)
	}
	rec.mu.Unlock()
	for _, a := range rec.all() {
		switch {
		case a.status == http.StatusCreated:
			if a.leaseID == "" || a.username == "" {
				t.Errorf("client %d: a 201 without lease_id or username (request %s)", a.client, a.requestID)
			}
		case a.status == http.StatusServiceUnavailable:
			if a.retryAfter == "" {
				t.Errorf("client %d: 503 %s without Retry-After (request %s)", a.client, a.code, a.requestID)
			}
			if a.code != string(api.CodeDatabaseUnavailable) && a.code != string(api.CodeSTSUnavailable) {
				t.Errorf("client %d: 503 with code %q (%s), want database_unavailable or sts_unavailable", a.client, a.code, a.message)
			}
		default:
			t.Errorf("client %d: broker %d answered %d %s %q (request %s); its log says: %s",
				a.client, a.broker, a.status, a.code, a.message, a.requestID, requestLog(procs[a.broker], a.requestID))
		}
	}
	// A broker may also have answered to a client that had already given
	// up (its INIT budget ran out): no transport saw that answer, the
	// broker's log did. A cancelled request is the database not answering
	// in time (503), so any 5xx but 503 there is a defect too.
	unavailable := map[string]int{}
	for _, p := range procs {
		for _, l := range lines(p.stderr, "request") {
			if l.Status == http.StatusServiceUnavailable {
				unavailable[l.Code+": "+l.Cause]++
			}
			if l.Status >= 500 && l.Status != http.StatusServiceUnavailable {
				t.Errorf("broker %d answered %d %s to request %s (%s), cause %q", p.idx, l.Status, l.Code, l.RequestID, l.Path, l.Cause)
			}
		}
	}
	for _, cause := range slices.Sorted(maps.Keys(unavailable)) {
		t.Logf("brokers answered 503 %d times for %s", unavailable[cause], cause)
	}
}

// requestLog is the broker's "request" log line of id (status, code,
// cause), or what is known without it.
func requestLog(p *brokerProc, id string) string {
	for _, l := range lines(p.stderr, "request") {
		if l.RequestID == id {
			return fmt.Sprintf("status %d code %s cause %q", l.Status, l.Code, l.Cause)
		}
	}
	return "no request line for " + id
}

// checkOutcomes: every client holds a credential, or its INIT failed with
// an error that says why: the broker's 503 code, a failure to reach it, or
// the budget. Nothing else (a 4xx, an undecodable answer) is acceptable.
func checkOutcomes(t *testing.T, outcomes []outcome) {
	t.Helper()
	for _, o := range outcomes {
		switch {
		case o.cred != nil:
			if o.err != nil {
				t.Errorf("client %d: a credential and an error: %v", o.client, o.err)
			}
		case o.err == nil:
			t.Errorf("client %d: INIT returned neither a credential nor an error", o.client)
		case brokerclient.StatusOf(o.err) == http.StatusServiceUnavailable && api.CodeOf(o.err) != "":
		case brokerclient.Retryable(o.err), errors.Is(o.err, context.DeadlineExceeded):
		default:
			t.Errorf("client %d: INIT failed without a retryable cause: %v", o.client, o.err)
		}
	}
}

// checkDatabase compares what the clients saw and what the brokers logged
// with the leases, roles and audit rows in PostgreSQL.
func checkDatabase(t *testing.T, ctx context.Context, sc scenario, pg *pgserver.Server, rec *recorder, outcomes []outcome, procs []*brokerProc) {
	t.Helper()
	conn, err := pgx.Connect(ctx, pg.URL())
	if err != nil {
		t.Fatalf("connecting as superuser: %v", err)
	}
	defer conn.Close(context.Background())

	leases := map[string]string{} // lease_id → username
	rows, err := conn.Query(ctx, `SELECT lease_id::text, username FROM ephemera.leases`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id, user string
		if err := rows.Scan(&id, &user); err != nil {
			t.Fatal(err)
		}
		leases[id] = user
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	type key struct{ requestID, event, decision string }
	auditRows := map[key]int{}
	issueAllow := map[string]int{} // lease_id → issue/allow rows
	nIssueAllow := 0
	rows, err = conn.Query(ctx, `SELECT request_id, event, decision, coalesce(lease_id::text, '') FROM ephemera.audit_log`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k key
		var leaseID string
		if err := rows.Scan(&k.requestID, &k.event, &k.decision, &leaseID); err != nil {
			t.Fatal(err)
		}
		auditRows[k]++
		if k.event == "issue" && k.decision == "allow" {
			issueAllow[leaseID]++
			nIssueAllow++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// Every 201 has its lease and exactly one issue/allow row.
	seen := 0
	for _, a := range rec.all() {
		if a.status != http.StatusCreated {
			continue
		}
		seen++
		if user, ok := leases[a.leaseID]; !ok || user != a.username {
			t.Errorf("client %d: lease %s of a 201 is not in ephemera.leases with its username", a.client, a.leaseID)
		}
		if n := issueAllow[a.leaseID]; n != 1 {
			t.Errorf("client %d: lease %s of a 201 has %d issue/allow audit rows, want 1", a.client, a.leaseID, n)
		}
	}
	if nIssueAllow != len(leases) {
		t.Errorf("%d issue/allow audit rows but %d leases", nIssueAllow, len(leases))
	}
	for id, n := range issueAllow {
		if _, ok := leases[id]; !ok || n != 1 {
			t.Errorf("issue/allow audit rows for lease %q: %d, lease present: %v", id, n, ok)
		}
	}
	if orphans := len(leases) - seen; orphans > 0 {
		// A lease whose 201 no client read: its client gave up (budget) while
		// the broker committed. Legitimate; the lease expires and is reaped.
		t.Logf("%d leases were committed after their client had given up (they expire and are reaped)", orphans)
	}
	for _, o := range outcomes {
		if o.cred != nil {
			if user, ok := leases[o.cred.LeaseID]; !ok || user != o.cred.Username {
				t.Errorf("client %d holds lease %s, which is not in ephemera.leases with its username", o.client, o.cred.LeaseID)
			}
		}
	}

	// Every audit line a broker wrote for a configured database has its
	// row, except where the broker says why not: the database was what
	// failed (database_unavailable: the line stands alone by design), or it
	// logged "audit row not written" (the row of a decision that changes
	// nothing gets auditRowTimeout, 1 s, and the line stands when that runs
	// out). Those are counted and reported; a row missing without either is
	// a silent loss and fails the test.
	var alone, logged, silent int
	unwritten := map[string]int{} // event/decision (reason): error → count
	for _, p := range procs {
		failed := map[string]string{} // request id → why the row was not written
		for _, l := range lines(p.stderr, "audit row not written; the audit line stands") {
			failed[l.RequestID] = l.Err
		}
		for _, l := range lines(p.stdout, "audit") {
			if l.Database != "orders" {
				continue
			}
			logged++
			k := key{l.RequestID, l.Event, l.Decision}
			why, noted := failed[l.RequestID]
			switch {
			case l.Reason == string(api.CodeDatabaseUnavailable):
				alone++
				if auditRows[k] != 0 {
					t.Errorf("broker %d: request %s: a database_unavailable decision has a row", p.idx, l.RequestID)
				}
			case auditRows[k] == 1:
			case auditRows[k] == 0 && noted:
				unwritten[fmt.Sprintf("%s/%s (reason %s): %s", l.Event, l.Decision, l.Reason, why)]++
			default:
				silent++
				t.Errorf("broker %d: audit line %s %s/%s (reason %q) has %d rows, want 1, and the broker logged no failure",
					p.idx, l.RequestID, l.Event, l.Decision, l.Reason, auditRows[k])
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(unwritten)) {
		t.Logf("FINDING: %d audit lines without a row, the broker logged \"audit row not written\": %s", unwritten[k], k)
	}
	t.Logf("audit: %d lines naming the database, %d rows, %d database_unavailable lines without a row (by design), %d silently lost",
		logged, len(auditRows), alone, silent)

	// No role without a lease, no live lease without its role.
	var marker string
	if err := conn.QueryRow(ctx, `SELECT marker_group FROM ephemera.deployment`).Scan(&marker); err != nil {
		t.Fatalf("reading the marker group: %v", err)
	}
	var roleless, leaseless []string
	rows, err = conn.Query(ctx, `
		SELECT r.rolname FROM pg_catalog.pg_roles r
		WHERE (r.rolname LIKE 'eph\_%' OR pg_catalog.pg_has_role(r.oid, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1), 'MEMBER'))
		  AND NOT r.rolsuper AND r.rolname NOT IN ($1, $2)
		  AND NOT EXISTS (SELECT 1 FROM ephemera.leases l WHERE l.username = r.rolname)`, marker, demodb.AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	if leaseless, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	rows, err = conn.Query(ctx, `
		SELECT l.username FROM ephemera.leases l
		WHERE l.revoked_at IS NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = l.username)`)
	if err != nil {
		t.Fatal(err)
	}
	if roleless, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if len(leaseless) > 0 {
		t.Errorf("%d roles without a lease: %v", len(leaseless), leaseless)
	}
	if len(roleless) > 0 {
		t.Errorf("%d live leases without their role: %v", len(roleless), roleless)
	}
	t.Logf("database: %d leases, %d issue/allow rows, %d 201s seen by clients", len(leases), nIssueAllow, seen)
}

// checkSecrets: no password any client received appears in what a broker
// wrote.
func checkSecrets(t *testing.T, rec *recorder, procs []*brokerProc) {
	t.Helper()
	rec.mu.Lock()
	passwords := append([]string(nil), rec.passwords...)
	rec.mu.Unlock()
	for _, p := range procs {
		out := p.stdout.String() + p.stderr.String()
		for _, pw := range passwords {
			if strings.Contains(out, pw) {
				t.Errorf("broker %d wrote a password it issued", p.idx)
				break
			}
		}
	}
}

// checkServerLog reports whether PostgreSQL refused connections: the
// condition the brokers must answer with 503, never 500.
func checkServerLog(t *testing.T, sc scenario, pg *pgserver.Server) {
	t.Helper()
	logs, err := pg.Logs()
	if err != nil {
		t.Logf("no server log (%v)", err)
		return
	}
	text := string(logs)
	refused := strings.Count(text, "too many clients already") + strings.Count(text, "remaining connection slots are reserved")
	t.Logf("PostgreSQL refused %d connections for lack of slots", refused)
	if sc.exhausts && refused == 0 {
		t.Errorf("%d brokers with pools of %d never exhausted max_connections %d: the storm did not test what it claims",
			brokers, sc.poolSize, maxConnections)
	}
}
