package broker_test

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

func TestIssueHappyPath(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "orders-fn")
	a := e.mustIssue(w, "readonly", 600)

	user := a.str("username")
	if !strings.HasPrefix(user, "eph_readonly_") {
		t.Fatalf("username %q", user)
	}
	for _, k := range []string{"lease_id", "database", "role", "username", "password", "host", "port", "dbname", "sslmode", "issued_at", "expires_at", "max_expires_at", "renewable"} {
		if _, ok := a.Body[k]; !ok {
			t.Errorf("credential lacks %q", k)
		}
	}
	issued, expires, maxExp := parseTime(t, a.str("issued_at")), parseTime(t, a.str("expires_at")), parseTime(t, a.str("max_expires_at"))
	if expires.Sub(issued) != 10*time.Minute || maxExp.Sub(issued) != time.Hour {
		t.Errorf("issued %s expires %s max %s", issued, expires, maxExp)
	}
	if a.Body["renewable"] != true || a.str("database") != "orders" || a.str("role") != "readonly" {
		t.Errorf("body %s", a.Raw)
	}

	// Logging in works, as the generated user, with exactly the group's privileges.
	conn, err := login(t, a)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	ctx := context.Background()
	var current string
	must(t, conn.QueryRow(ctx, "SELECT current_user").Scan(&current))
	if current != user {
		t.Fatalf("current_user %q, want %q", current, user)
	}
	var n int
	must(t, conn.QueryRow(ctx, "SELECT count(*) FROM public.orders").Scan(&n))
	if n != 3 {
		t.Errorf("orders rows %d", n)
	}
	_, err = conn.Exec(ctx, "SELECT * FROM public.payroll")
	assertSQLState(t, err, "42501")
	_, err = conn.Exec(ctx, "INSERT INTO public.orders VALUES (99, 'x', 1)")
	assertSQLState(t, err, "42501")
	_, err = conn.Exec(ctx, "SELECT * FROM ephemera.leases")
	assertSQLState(t, err, "42501")

	su := superuser(t)
	var groups []string
	must(t, su.QueryRow(ctx, `SELECT coalesce(array_agg(g.rolname::text ORDER BY g.rolname), '{}') FROM pg_auth_members m
		JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1`, user).Scan(&groups))
	// The role's group, and the deployment's NOLOGIN marker (which grants
	// nothing: it tells the sweep the role is ours).
	if len(groups) != 2 || groups[1] != "orders_read" || !strings.HasPrefix(groups[0], "ephemera_leased_") {
		t.Errorf("memberships %v, want [ephemera_leased_… orders_read]", groups)
	}
	var super, createrole, createdb bool
	var validUntil time.Time
	must(t, su.QueryRow(ctx, `SELECT rolsuper, rolcreaterole, rolcreatedb, rolvaliduntil FROM pg_roles WHERE rolname = $1`, user).
		Scan(&super, &createrole, &createdb, &validUntil))
	if super || createrole || createdb {
		t.Errorf("role attributes super=%v createrole=%v createdb=%v", super, createrole, createdb)
	}
	var leaseExpires time.Time
	must(t, su.QueryRow(ctx, `SELECT expires_at FROM ephemera.leases WHERE lease_id = $1`, a.str("lease_id")).Scan(&leaseExpires))
	if !validUntil.Equal(leaseExpires) || !leaseExpires.Equal(expires) {
		t.Errorf("VALID UNTIL %s, lease %s, answer %s: must be equal", validUntil, leaseExpires, expires)
	}
	// The password is stored as a SCRAM verifier.
	var secret string
	must(t, su.QueryRow(ctx, `SELECT rolpassword FROM pg_authid WHERE rolname = $1`, user).Scan(&secret))
	if !strings.HasPrefix(secret, "SCRAM-SHA-256$4096:") {
		t.Errorf("stored password is not a SCRAM verifier: %.20s", secret)
	}

	row := auditOne(t, a.RequestID)
	if row.Event != "issue" || row.Decision != "allow" || row.Username != user || row.LeaseID != a.str("lease_id") ||
		row.PrincipalARN != "arn:aws:iam::123456789012:role/orders-api-role" || row.TTLSeconds != 600 ||
		!contains(row.Policies, "orders-api-reads-orders") {
		t.Errorf("audit row %+v", row)
	}
}

func TestIssueDefaultTTL(t *testing.T) {
	e := newEnv(t, envOptions{})
	a := e.mustIssue(e.workload("orders-api-role", "fn"), "short", 0)
	if d := parseTime(t, a.str("expires_at")).Sub(parseTime(t, a.str("issued_at"))); d != time.Minute {
		t.Fatalf("default TTL %s, want 1m", d)
	}
}

func TestIssueTTLAboveMax(t *testing.T) {
	e := newEnv(t, envOptions{})
	before := ephemeralRoles(t)
	a := e.issue(e.workload("orders-api-role", "fn"), "short", 121)
	if a.Status != http.StatusBadRequest || a.code() != "ttl_exceeds_max" {
		t.Fatalf("got %d %s", a.Status, a.Raw)
	}
	if after := ephemeralRoles(t); after != before {
		t.Fatalf("roles %d → %d: a refused issue created a role", before, after)
	}
	if row := auditOne(t, a.RequestID); row.Decision != "deny" || row.Reason != "ttl_exceeds_max" {
		t.Fatalf("audit %+v", row)
	}
}

func TestIssueUnknownDatabaseOrRole(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	for _, body := range []map[string]any{
		{"database": "billing", "role": "readonly"},
		{"database": "orders", "role": "superuser"},
	} {
		body["identity"] = e.proof(w)
		a := e.post("/v1/credentials", body)
		if a.Status != http.StatusNotFound || a.code() != "not_found" {
			t.Errorf("%v: %d %s", body["database"], a.Status, a.Raw)
		}
	}
}

func TestIssuePolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	cases := []struct {
		name          string
		account, role string
		ttl           int
		want          int
		policy        string
	}{
		{"permit by like on role", account, "orders-api-role", 900, 201, "orders-api-reads-orders"},
		{"ttl context above policy limit", account, "orders-api-role", 901, 403, ""},
		{"role not matching like", account, "billing-api-role", 60, 403, ""},
		{"same role name in another account", "210987654321", "orders-api-role", 60, 403, ""},
		{"forbid beats permit", account, "orders-api-compromised", 60, 403, "quarantine"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := e.issue(e.workloadIn(c.account, c.role, "fn"), "readonly", c.ttl)
			if a.Status != c.want {
				t.Fatalf("status %d, want %d: %s", a.Status, c.want, a.Raw)
			}
			row := auditOne(t, a.RequestID)
			if c.want == 403 && (a.code() != "access_denied" || row.Decision != "deny" || row.Reason != "access_denied") {
				t.Fatalf("answer %s, audit %+v", a.Raw, row)
			}
			if c.policy != "" && !contains(row.Policies, c.policy) {
				t.Fatalf("audit policies %v, want %s", row.Policies, c.policy)
			}
			if c.want == 403 && c.policy == "" && len(row.Policies) != 0 {
				t.Fatalf("default deny recorded policies %v", row.Policies)
			}
		})
	}
}

func TestNoPoliciesDeniesEverything(t *testing.T) {
	none := ""
	e := newEnv(t, envOptions{policies: &none})
	before := ephemeralRoles(t)
	a := e.issue(e.workload("orders-api-role", "fn"), "readonly", 60)
	if a.Status != http.StatusForbidden || a.code() != "access_denied" {
		t.Fatalf("got %d %s", a.Status, a.Raw)
	}
	if ephemeralRoles(t) != before {
		t.Fatal("a role was created")
	}
}

func TestInvalidPoliciesFailStart(t *testing.T) {
	// A broker whose policies do not validate must not start (and so serves nothing).
	bad := `permit (principal, action == Ephemera::Action::"fly", resource);`
	_, err := startBroker(t, envOptions{policies: &bad}, stsserver.StartTB(t), &observe.Buffer{}, &observe.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "orders.cedar") {
		t.Fatalf("broker.New with an invalid policy: err = %v, want an error naming orders.cedar", err)
	}
}

func TestIssueLeaseLimit(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	// The limit counts live leases; earlier tests may have left some of "limited".
	su := superuser(t)
	_, err := su.Exec(context.Background(), `UPDATE ephemera.leases SET expires_at = issued_at WHERE db_role = 'limited'`)
	must(t, err)
	e.mustIssue(w, "limited", 0)
	e.mustIssue(w, "limited", 0)
	before := ephemeralRoles(t)
	a := e.issue(w, "limited", 0)
	if a.Status != http.StatusTooManyRequests || a.code() != "lease_limit" {
		t.Fatalf("third issue: %d %s", a.Status, a.Raw)
	}
	if ephemeralRoles(t) != before {
		t.Fatal("a refused issue created a role")
	}
}

func TestConcurrentIssuesSameRole(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	const n = 64
	proofs := make([]any, n)
	for i := range proofs {
		proofs[i] = e.proof(w)
	}
	var wg sync.WaitGroup
	answers := make([]answer, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			answers[i] = e.post("/v1/credentials", map[string]any{"identity": proofs[i], "database": "orders", "role": "readonly", "ttl_seconds": 300})
		}(i)
	}
	wg.Wait()
	users := map[string]bool{}
	for i, a := range answers {
		if a.Status != http.StatusCreated {
			t.Errorf("issue %d: %d %s", i, a.Status, a.Raw)
			continue
		}
		users[a.str("username")] = true
	}
	if len(users) != n {
		t.Fatalf("%d distinct users, want %d", len(users), n)
	}
	var members int
	must(t, superuser(t).QueryRow(context.Background(), `SELECT count(*) FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
		JOIN pg_roles u ON u.oid = m.member WHERE g.rolname = 'orders_read' AND u.rolname = ANY($1)`, keys(users)).Scan(&members))
	if members != n {
		t.Fatalf("%d memberships, want %d", members, n)
	}
}

// TestNoSecretLeaks: with log_statement=all, the plaintext password of an
// issued credential appears in no PostgreSQL log line, broker log line, audit
// line or audit row; nor do the proof's signature or session token.
func TestNoSecretLeaks(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	p := e.proof(w)
	a := e.post("/v1/credentials", map[string]any{"identity": p, "database": "orders", "role": "readonly", "ttl_seconds": 300})
	if a.Status != http.StatusCreated {
		t.Fatalf("issue: %d %s", a.Status, a.Raw)
	}
	password := a.str("password")
	if len(password) < 43 {
		t.Fatalf("password too short: %d chars", len(password))
	}
	conn, err := login(t, a) // the login itself must not log it either
	must(t, err)
	_, err = conn.Exec(context.Background(), "SELECT 1")
	must(t, err)
	// a failing request too: replay the proof
	_ = e.post("/v1/credentials", map[string]any{"identity": p, "database": "orders", "role": "readonly"})

	pgLogs, err := pg.Logs()
	must(t, err)
	if !strings.Contains(string(pgLogs), "CREATE ROLE") {
		t.Fatal("log_statement=all is not in effect: CREATE ROLE not logged")
	}
	var rows string
	must(t, superuser(t).QueryRow(context.Background(), `SELECT coalesce(string_agg(row_to_json(a)::text, E'\n'), '') FROM ephemera.audit_log a`).Scan(&rows))
	signature := p.Headers["Authorization"][0][strings.Index(p.Headers["Authorization"][0], "Signature=")+len("Signature="):]
	secrets := map[string]string{
		"password":      password,
		"signature":     signature,
		"session token": w.creds.SessionToken,
		"secret key":    w.creds.SecretAccessKey,
		"nonce":         p.Headers["X-Ephemera-Nonce"][0],
	}
	sources := map[string]string{
		"PostgreSQL log": string(pgLogs),
		"broker log":     e.logs.String(),
		"audit lines":    e.audits.String(),
		"audit rows":     rows,
	}
	for sname, src := range sources {
		if src == "" && sname != "PostgreSQL log" {
			t.Errorf("%s is empty: nothing was checked", sname)
		}
		for what, secret := range secrets {
			if what == "nonce" && sname == "PostgreSQL log" {
				continue // PostgreSQL may log a spent nonce (a bind parameter, a refused duplicate's key); it proves nothing alone
			}
			if strings.Contains(src, secret) {
				t.Errorf("%s contains the %s", sname, what)
			}
		}
	}
}

func assertSQLState(t *testing.T, err error, code string) {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != code {
		t.Fatalf("error %v, want SQLSTATE %s", err, code)
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
