package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/faultproxy"
)

// Failures of PostgreSQL are the database's, not the broker's: every one of
// them is 503 database_unavailable with Retry-After, within the request's
// database deadline (EPHEMERA_DB_TIMEOUT) plus a second, never 500 and
// never a hang. A fault proxy between the broker and the real server
// stops (connections reset and refused) and freezes (no byte either way).

const testDBTimeout = time.Second

// faultEnv is a broker that reaches PostgreSQL through a fault proxy, with
// a one-second database deadline and a one-connection admin pool (as in
// Lambda).
func faultEnv(t *testing.T) (*env, *faultproxy.Proxy) {
	t.Helper()
	proxy := faultproxy.StartTB(t, fmt.Sprintf("127.0.0.1:%d", pg.Port()))
	e := newEnv(t, envOptions{dbPort: proxy.Port(), yaml: "admin_pool_size: 1\n",
		env: map[string]string{"EPHEMERA_DB_TIMEOUT": testDBTimeout.String()}})
	return e, proxy
}

// timed posts and measures.
func (e *env) timed(path string, body any) (answer, time.Duration) {
	start := time.Now()
	a := e.post(path, body)
	return a, time.Since(start)
}

func assertUnavailable(t *testing.T, what string, a answer, took time.Duration) {
	t.Helper()
	if a.Status != http.StatusServiceUnavailable || a.code() != string(api.CodeDatabaseUnavailable) {
		t.Errorf("%s: got %d %s, want 503 database_unavailable", what, a.Status, a.Raw)
	}
	if ra, err := strconv.Atoi(a.Header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("%s: Retry-After %q, want whole seconds ≥ 1", what, a.Header.Get("Retry-After"))
	}
	if took > testDBTimeout+time.Second {
		t.Errorf("%s: answered after %v, want within the deadline %v plus 1s", what, took, testDBTimeout)
	}
}

func TestDatabaseDownIs503(t *testing.T) {
	e, proxy := faultEnv(t)
	w := e.workload("orders-api-outage", "fn")
	held := e.mustIssue(w, "readonly", 600)
	id := held.str("lease_id")

	proxy.Stop()
	a, took := e.timed("/v1/credentials", map[string]any{"identity": e.proof(w), "database": "orders", "role": "readonly", "ttl_seconds": 60})
	assertUnavailable(t, "issue", a, took)
	a, took = e.timed("/v1/leases/"+id+"/renew", map[string]any{"identity": e.proof(w), "ttl_seconds": 60})
	assertUnavailable(t, "renew", a, took)
	a, took = e.timed("/v1/leases/"+id+"/revoke", map[string]any{"identity": e.proof(w)})
	assertUnavailable(t, "revoke", a, took)
	ir := e.workload("incident-responder", "ir")
	a, took = e.timed("/v1/admin/revoke", map[string]any{"identity": e.proof(ir), "principal_arn": "arn:aws:iam::" + account + ":role/orders-api-outage"})
	assertUnavailable(t, "admin revoke", a, took)
	reports := e.workload("reports-outage", "fn")
	a, took = e.timed("/v1/aws-credentials", map[string]any{"identity": e.proof(reports), "profile": "reports-read"})
	assertUnavailable(t, "aws credentials (the proof's nonce lives in the database)", a, took)

	// Back: the same broker serves again, and the held lease is intact.
	proxy.Start()
	e.mustIssue(w, "readonly", 60)
	if a := e.post("/v1/leases/"+id+"/renew", map[string]any{"identity": e.proof(w), "ttl_seconds": 60}); a.Status != http.StatusOK {
		t.Fatalf("renew after the outage: %d %s", a.Status, a.Raw)
	}
}

func TestDatabaseFrozenIs503WithinTheDeadline(t *testing.T) {
	e, proxy := faultEnv(t)
	w := e.workload("orders-api-frozen", "fn")
	e.mustIssue(w, "readonly", 60) // the pool holds a connection: the freeze catches it mid-use
	proxy.Freeze()
	t.Cleanup(proxy.Thaw)
	a, took := e.timed("/v1/credentials", map[string]any{"identity": e.proof(w), "database": "orders", "role": "readonly", "ttl_seconds": 60})
	assertUnavailable(t, "issue while frozen", a, took)
	proxy.Thaw()
	e.mustIssue(w, "readonly", 60)
}

// TestDatabaseRefusingLoginsIs503: PostgreSQL answers, but refuses the
// admin's connections (too many connections for the role, SQLSTATE 53300,
// as at max_connections).
func TestDatabaseRefusingLoginsIs503(t *testing.T) {
	su := superuser(t)
	_, err := su.Exec(context.Background(), "ALTER ROLE "+setup.AdminUser+" CONNECTION LIMIT 0")
	must(t, err)
	t.Cleanup(func() {
		_, err := su.Exec(context.Background(), "ALTER ROLE "+setup.AdminUser+" CONNECTION LIMIT -1")
		must(t, err)
	})
	proxy := faultproxy.StartTB(t, fmt.Sprintf("127.0.0.1:%d", pg.Port()))
	proxy.Stop() // broker.New migrates: let it start, then refuse
	e := func() *env {
		_, err := su.Exec(context.Background(), "ALTER ROLE "+setup.AdminUser+" CONNECTION LIMIT -1")
		must(t, err)
		proxy.Start()
		e := newEnv(t, envOptions{dbPort: proxy.Port(), yaml: "admin_pool_size: 1\n",
			env: map[string]string{"EPHEMERA_DB_TIMEOUT": testDBTimeout.String()}})
		proxy.Stop() // drop the migration's connection
		proxy.Start()
		_, err = su.Exec(context.Background(), "ALTER ROLE "+setup.AdminUser+" CONNECTION LIMIT 0")
		must(t, err)
		return e
	}()
	w := e.workload("orders-api-saturated", "fn")
	a, took := e.timed("/v1/credentials", map[string]any{"identity": e.proof(w), "database": "orders", "role": "readonly", "ttl_seconds": 60})
	assertUnavailable(t, "issue at the connection limit", a, took)
}

// TestOutageDuringABurst is the bounded fault test: PostgreSQL stops in the
// middle of a burst of issues and revokes, then comes back. Zero 500s;
// every answer within the deadline plus 1 s; afterwards no role without a
// lease, no live lease without a role, and exactly one audit row per state
// change.
func TestOutageDuringABurst(t *testing.T) {
	e, proxy := faultEnv(t)
	role := "orders-api-burst"
	w := e.workload(role, "fn")
	principal := "arn:aws:iam::" + account + ":role/" + role

	type result struct {
		status int
		took   time.Duration
		err    error
	}
	var mu sync.Mutex
	var results []result
	post := func(path string, body any) (int, map[string]any) {
		data, _ := json.Marshal(body)
		start := time.Now()
		resp, err := http.Post(e.srv.URL+path, "application/json", bytes.NewReader(data))
		r := result{took: time.Since(start), err: err}
		var out map[string]any
		if err == nil {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			r.status = resp.StatusCode
			_ = json.Unmarshal(raw, &out)
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") == "" {
				r.err = fmt.Errorf("503 without Retry-After: %s", raw)
			}
		}
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
		return r.status, out
	}
	sign := func() any {
		p, err := attest.Sign(context.Background(), w.creds, region, audience, time.Now())
		if err != nil {
			t.Error(err)
		}
		return p
	}
	stop := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				status, out := post("/v1/credentials", map[string]any{"identity": sign(), "database": "orders", "role": "readonly", "ttl_seconds": 60})
				if status == http.StatusCreated {
					id, _ := out["lease_id"].(string)
					post("/v1/leases/"+id+"/revoke", map[string]any{"identity": sign()})
				}
			}
		}()
	}
	time.Sleep(time.Second)
	proxy.Stop()
	time.Sleep(time.Second)
	proxy.Start()
	wg.Wait()

	counts := map[int]int{}
	for _, r := range results {
		if r.err != nil {
			t.Errorf("request failed: %v", r.err)
			continue
		}
		counts[r.status]++
		if r.took > testDBTimeout+time.Second {
			t.Errorf("an answer (%d) took %v", r.status, r.took)
		}
	}
	t.Logf("answers: %v", counts)
	if counts[http.StatusInternalServerError] != 0 {
		t.Errorf("%d answers were 500", counts[http.StatusInternalServerError])
	}
	if counts[http.StatusCreated] == 0 || counts[http.StatusServiceUnavailable] == 0 {
		t.Fatalf("the burst did not see both service and outage: %v", counts)
	}
	// Revocations that began and could not finish are the reaper's.
	if _, err := e.broker.Reaper().Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertConsistent(t, principal)
}

// assertConsistent checks the invariants of a principal's leases: no
// ephemeral role without a lease, no live lease without a role, one issue
// row per lease, one revoke row per begun revocation.
func assertConsistent(t *testing.T, principal string) {
	t.Helper()
	su := superuser(t)
	ctx := context.Background()
	var orphanRoles, liveWithoutRole, leases, issueRows, begun, revokeRows, doubled int
	must(t, su.QueryRow(ctx, `SELECT count(*) FROM pg_roles r WHERE r.rolname LIKE 'eph\_readonly\_%'
		AND NOT EXISTS (SELECT 1 FROM ephemera.leases l WHERE l.username = r.rolname)`).Scan(&orphanRoles))
	must(t, su.QueryRow(ctx, `SELECT count(*) FROM ephemera.leases l WHERE l.principal_arn = $1
		AND l.revoked_at IS NULL AND l.expires_at > now()
		AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = l.username)`, principal).Scan(&liveWithoutRole))
	must(t, su.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE revoke_started_at IS NOT NULL)
		FROM ephemera.leases WHERE principal_arn = $1`, principal).Scan(&leases, &begun))
	must(t, su.QueryRow(ctx, `SELECT count(*) FROM ephemera.audit_log a JOIN ephemera.leases l ON l.lease_id = a.lease_id
		WHERE l.principal_arn = $1 AND a.event = 'issue' AND a.decision = 'allow'`, principal).Scan(&issueRows))
	must(t, su.QueryRow(ctx, `SELECT count(*) FROM ephemera.audit_log a JOIN ephemera.leases l ON l.lease_id = a.lease_id
		WHERE l.principal_arn = $1 AND a.event = 'revoke' AND a.decision = 'allow' AND a.reason = ''`, principal).Scan(&revokeRows))
	must(t, su.QueryRow(ctx, `SELECT count(*) FROM (SELECT a.lease_id FROM ephemera.audit_log a
		JOIN ephemera.leases l ON l.lease_id = a.lease_id WHERE l.principal_arn = $1 AND a.decision = 'allow'
		AND a.reason = '' GROUP BY a.lease_id, a.event HAVING count(*) > 1) d`, principal).Scan(&doubled))
	t.Logf("leases %d, revocations begun %d", leases, begun)
	if orphanRoles != 0 {
		t.Errorf("%d ephemeral roles without a lease", orphanRoles)
	}
	if liveWithoutRole != 0 {
		t.Errorf("%d live leases without a role", liveWithoutRole)
	}
	if issueRows != leases {
		t.Errorf("%d issue audit rows for %d leases", issueRows, leases)
	}
	if revokeRows != begun {
		t.Errorf("%d revoke audit rows for %d begun revocations", revokeRows, begun)
	}
	if doubled != 0 {
		t.Errorf("%d leases with two audit rows for one change", doubled)
	}
}

// TestCancelledRequestIs503: a caller that gives up while the broker waits
// for the database (a client that disconnected from 'ephemera broker
// serve', a storm's INIT budget running out) is the database not answering
// in time: database_unavailable, audited and counted as an error of a
// dependency, never internal (which would page someone for a bug).
func TestCancelledRequestIs503(t *testing.T) {
	e, proxy := faultEnv(t)
	w := e.workload("orders-api-cancelled", "fn")
	e.mustIssue(w, "readonly", 60)
	proxy.Freeze()
	t.Cleanup(proxy.Thaw)

	const requestID = "cancelled-request-1"
	ctx, cancel := context.WithCancel(broker.NewContext(context.Background(),
		broker.RequestInfo{ID: requestID, Received: time.Now()}))
	time.AfterFunc(200*time.Millisecond, cancel)
	ttl := int64(60)
	_, err := e.broker.Issue(ctx, broker.IssueInput{Identity: broker.Proof(e.proof(w)),
		Database: "orders", Role: "readonly", TTLSeconds: &ttl})
	if !errors.Is(err, api.ErrDatabaseUnavailable) {
		t.Fatalf("Issue cancelled while the database was frozen: %v (code %q), want database_unavailable", err, api.CodeOf(err))
	}
	var line struct {
		RequestID string `json:"request_id"`
		Decision  string `json:"decision"`
		Reason    string `json:"reason"`
	}
	found := false
	for _, l := range e.audits.Lines() {
		if json.Unmarshal([]byte(l), &line) == nil && line.RequestID == requestID {
			found = true
			if line.Decision != "error" || line.Reason != string(api.CodeDatabaseUnavailable) {
				t.Errorf("audit line: decision %q reason %q, want error database_unavailable", line.Decision, line.Reason)
			}
		}
	}
	if !found {
		t.Errorf("no audit line for request %s:\n%s", requestID, e.audits.String())
	}
}
