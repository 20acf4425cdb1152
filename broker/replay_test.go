package broker_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
)

// nonceOf is the proof's X-Ephemera-Nonce.
func nonceOf(p *attest.Proof) string {
	for k, v := range p.Headers {
		if http.CanonicalHeaderKey(k) == attest.HeaderNonce && len(v) > 0 {
			return v[0]
		}
	}
	return ""
}

// nonceRecorded reports whether the proof's nonce is in ephemera.nonces.
func nonceRecorded(t *testing.T, p *attest.Proof) bool {
	t.Helper()
	var ok bool
	must(t, superuser(t).QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM ephemera.nonces WHERE nonce = $1)`, nonceOf(p)).Scan(&ok))
	return ok
}

// TestIssueIsOneCommit: the proof's nonce, the lease and its audit row are
// written by one transaction (the replay database is the issue's own), so
// a credential costs PostgreSQL one commit and the nonce is durable
// exactly when the credential is.
func TestIssueIsOneCommit(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.proof(e.workload("orders-api-role", "fn"))
	a := e.post("/v1/credentials", map[string]any{"identity": p, "database": "orders", "role": "readonly", "ttl_seconds": 60})
	if a.Status != http.StatusCreated {
		t.Fatalf("issue: %d %s", a.Status, a.Raw)
	}
	var nonceXmin, leaseXmin, auditXmin string
	conn := superuser(t)
	ctx := context.Background()
	must(t, conn.QueryRow(ctx, `SELECT xmin::text FROM ephemera.leases WHERE lease_id = $1`, a.str("lease_id")).Scan(&leaseXmin))
	must(t, conn.QueryRow(ctx, `SELECT xmin::text FROM ephemera.audit_log WHERE request_id = $1`, a.RequestID).Scan(&auditXmin))
	must(t, conn.QueryRow(ctx, `SELECT xmin::text FROM ephemera.nonces WHERE nonce = $1`, nonceOf(p)).Scan(&nonceXmin))
	if nonceXmin != leaseXmin || auditXmin != leaseXmin {
		t.Fatalf("nonce, lease and audit row written by transactions %s, %s and %s; want one", nonceXmin, leaseXmin, auditXmin)
	}
}

// TestIssueSameProofConcurrently: one proof presented eight times at once
// gets exactly one credential; every other presentation is 401
// replayed_proof, audited as such, and leaves no role behind.
func TestIssueSameProofConcurrently(t *testing.T) {
	e := newEnv(t, envOptions{})
	p := e.proof(e.workload("orders-api-role", "fn"))
	body := map[string]any{"identity": p, "database": "orders", "role": "readonly", "ttl_seconds": 60}
	roles := ephemeralRoles(t)
	const n = 8
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			answers[i] = e.post("/v1/credentials", body)
		})
	}
	close(start)
	wg.Wait()
	created := 0
	for _, a := range answers {
		switch {
		case a.Status == http.StatusCreated:
			created++
		case a.Status == http.StatusUnauthorized && a.code() == "replayed_proof":
			if row := auditOne(t, a.RequestID); row.Decision != "deny" || row.Reason != "replayed_proof" {
				t.Errorf("audit of a refused presentation: %+v", row)
			}
		default:
			t.Errorf("presentation answered %d %s", a.Status, a.Raw)
		}
	}
	if created != 1 {
		t.Fatalf("%d of %d presentations got a credential, want exactly 1", created, n)
	}
	if got := ephemeralRoles(t); got != roles+1 {
		t.Fatalf("%d ephemeral roles after the race, want %d (one credential, nothing left by the refused ones)", got, roles+1)
	}
}

// TestRefusedProofCannotBeReused: a proof that reached a decision without a
// credential — denied by the policy, or asking for a TTL beyond the role's
// maximum — is spent: presenting it again is 401 replayed_proof and does
// not reach STS.
func TestRefusedProofCannotBeReused(t *testing.T) {
	e := newEnv(t, envOptions{})
	cases := []struct {
		name, role string
		ttl        int
		status     int
	}{
		{"denied by the policy", "orders-web-role", 60, http.StatusForbidden},
		{"ttl beyond the role's maximum", "orders-api-role", 7200, http.StatusBadRequest},
		{"unknown role", "orders-api-role", 0, http.StatusNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := e.proof(e.workload(tc.role, "fn"))
			body := map[string]any{"identity": p, "database": "orders", "role": "readonly"}
			if tc.ttl > 0 {
				body["ttl_seconds"] = tc.ttl
			}
			if tc.status == http.StatusNotFound {
				body["role"] = "no-such-role"
			}
			if a := e.post("/v1/credentials", body); a.Status != tc.status {
				t.Fatalf("first presentation: %d %s, want %d", a.Status, a.Raw, tc.status)
			}
			if !nonceRecorded(t, p) {
				t.Fatal("the refused proof's nonce was not recorded")
			}
			e.sts.Reset()
			a := e.post("/v1/credentials", body)
			if a.Status != http.StatusUnauthorized || a.code() != "replayed_proof" {
				t.Fatalf("second presentation: %d %s, want 401 replayed_proof", a.Status, a.Raw)
			}
			if e.sts.RequestCount() != 0 {
				t.Fatal("the second presentation reached STS")
			}
		})
	}
}

// TestNonceRecordedWhereTheReplayCheckLooks: only the replay database's own
// issues record the nonce in their transaction. Any other configured name —
// one whose host, port, database and admin user even match the replay
// database's (orders_alias), or one whose DSN reaches another database
// behind the same fields (orders_shadow) — commits the nonce in the replay
// database first. Either way the proof cannot be presented again, on any
// name.
func TestNonceRecordedWhereTheReplayCheckLooks(t *testing.T) {
	ctx := context.Background()
	su := superuser(t)
	suffix, err := attest.NewNonce()
	must(t, err)
	shadow := "shadow_" + suffix[:12]
	for _, sql := range []string{"CREATE DATABASE " + shadow, "GRANT CONNECT, CREATE ON DATABASE " + shadow + " TO " + setup.AdminUser} {
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pg.URL())
		if err == nil {
			_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+shadow+" WITH (FORCE)")
			_ = c.Close(context.Background())
		}
	})
	const aliases = `  orders_alias:
    host: 127.0.0.1
    port: %[1]d
    dbname: %[2]s
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: TEST_ORDERS_ADMIN_DSN}
    roles:
      readonly: {member_of: [orders_read]}
  orders_shadow:
    host: 127.0.0.1
    port: %[1]d
    dbname: %[2]s
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: TEST_SHADOW_ADMIN_DSN}
    roles:
      readonly: {member_of: [orders_read]}
`
	pol := basePolicies + `
@id("aliases")
permit (principal, action in [Ephemera::Action::"issue", Ephemera::Action::"revoke"], resource)
when { resource in Ephemera::Database::"orders_alias" || resource in Ephemera::Database::"orders_shadow" };
`
	e := newEnv(t, envOptions{databases: aliases, policies: &pol, yaml: "replay_database: orders\n",
		env: map[string]string{"TEST_SHADOW_ADMIN_DSN": pg.ConnString(setup.AdminUser, setup.AdminPassword, shadow)}})
	for _, tc := range []struct {
		db     string
		oneTxn bool
	}{{"orders", true}, {"orders_alias", false}, {"orders_shadow", false}} {
		t.Run(tc.db, func(t *testing.T) {
			w := e.workload("orders-api-role", "fn")
			p := e.proof(w)
			body := map[string]any{"identity": p, "database": tc.db, "role": "readonly", "ttl_seconds": 60}
			a := e.post("/v1/credentials", body)
			if a.Status != http.StatusCreated {
				t.Fatalf("issue: %d %s", a.Status, a.Raw)
			}
			// Roles are the cluster's: revoke the lease (the shadow
			// database is dropped afterwards) so no other test finds a
			// role without a lease in its database.
			t.Cleanup(func() {
				if r := e.post("/v1/leases/"+a.str("lease_id")+"/revoke", map[string]any{"identity": e.proof(w)}); r.Status != http.StatusOK {
					t.Errorf("revoke %s: %d %s", tc.db, r.Status, r.Raw)
				}
			})
			var nonceXmin string
			must(t, su.QueryRow(ctx, `SELECT xmin::text FROM ephemera.nonces WHERE nonce = $1`, nonceOf(p)).Scan(&nonceXmin))
			if tc.db != "orders_shadow" {
				var leaseXmin string
				must(t, su.QueryRow(ctx, `SELECT xmin::text FROM ephemera.leases WHERE lease_id = $1`, a.str("lease_id")).Scan(&leaseXmin))
				if (nonceXmin == leaseXmin) != tc.oneTxn {
					t.Fatalf("nonce in transaction %s, lease in %s; one transaction: %v, want %v", nonceXmin, leaseXmin, nonceXmin == leaseXmin, tc.oneTxn)
				}
			}
			for _, db := range []string{"orders", "orders_alias", "orders_shadow"} {
				body["database"] = db
				if a := e.post("/v1/credentials", body); a.code() != "replayed_proof" {
					t.Fatalf("the proof presented again for %s: %d %s", db, a.Status, a.Raw)
				}
			}
		})
	}
}

// TestCancelledRenewSpendsItsProof: a renewal that STS vouched for and that
// ended 503 because its caller went away (it waited on the lease's row
// lock) has spent its proof all the same: the replay database still
// answered.
func TestCancelledRenewSpendsItsProof(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	leaseID := e.mustIssue(w, "readonly", 60).str("lease_id")
	ctx := context.Background()
	tx, err := superuser(t).Begin(ctx)
	must(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM ephemera.leases WHERE lease_id = $1 FOR UPDATE`, leaseID)
	must(t, err)
	p := e.proof(w)
	rctx, cancel := context.WithCancel(broker.NewContext(ctx, broker.RequestInfo{ID: "cancelled-renew", Received: time.Now()}))
	defer cancel()
	// Cancel once the renewal waits on the row lock (its proof verified),
	// however long verification took on a busy machine.
	watcher := superuser(t)
	go func() {
		defer cancel()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			var waiting bool
			if err := watcher.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND query LIKE '%ephemera.leases%FOR UPDATE%')`).Scan(&waiting); err != nil || waiting {
				return
			}
		}
	}()
	ttl := int64(60)
	_, err = e.broker.Renew(rctx, broker.RenewInput{Identity: broker.Proof(p), LeaseID: leaseID, TTLSeconds: &ttl})
	if api.CodeOf(err) != api.CodeDatabaseUnavailable {
		t.Fatalf("the cancelled renewal: %v, want database_unavailable", err)
	}
	must(t, tx.Rollback(ctx))
	if !nonceRecorded(t, p) {
		t.Fatal("the cancelled renewal's proof nonce was not recorded")
	}
	if a := e.post("/v1/leases/"+leaseID+"/renew", map[string]any{"identity": p, "ttl_seconds": 60}); a.code() != "replayed_proof" {
		t.Fatalf("the cancelled renewal's proof presented again: %d %s", a.Status, a.Raw)
	}
}

// TestRenewAndRevokeAreOneCommitWithTheirNonce: a renewal's and a
// revocation's proof nonces commit with their audit rows (for a
// revocation, in the transaction that begins it), and a second
// presentation of either proof is 401 replayed_proof — also when the first
// found nothing to do (revoking a revoked lease).
func TestRenewAndRevokeAreOneCommitWithTheirNonce(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	id := e.mustIssue(w, "readonly", 60).str("lease_id")
	conn := superuser(t)
	ctx := context.Background()
	sameTxn := func(t *testing.T, p *attest.Proof, a answer) {
		t.Helper()
		var nonceXmin, auditXmin string
		must(t, conn.QueryRow(ctx, `SELECT xmin::text FROM ephemera.nonces WHERE nonce = $1`, nonceOf(p)).Scan(&nonceXmin))
		must(t, conn.QueryRow(ctx, `SELECT xmin::text FROM ephemera.audit_log WHERE request_id = $1`, a.RequestID).Scan(&auditXmin))
		if nonceXmin != auditXmin {
			t.Fatalf("nonce written by transaction %s, the audit row by %s; want one", nonceXmin, auditXmin)
		}
	}
	for _, step := range []struct {
		path   string
		body   map[string]any
		oneTxn bool
	}{
		{"/v1/leases/" + id + "/renew", map[string]any{"ttl_seconds": 120}, true},
		{"/v1/leases/" + id + "/revoke", map[string]any{}, true},
		// Already revoked: the repeat's audit row is written on its own,
		// and the proof is spent all the same.
		{"/v1/leases/" + id + "/revoke", map[string]any{}, false},
	} {
		p := e.proof(w)
		step.body["identity"] = p
		a := e.post(step.path, step.body)
		if a.Status != http.StatusOK {
			t.Fatalf("%s: %d %s", step.path, a.Status, a.Raw)
		}
		if step.oneTxn {
			sameTxn(t, p, a)
		} else if !nonceRecorded(t, p) {
			t.Fatalf("%s: the proof's nonce was not recorded", step.path)
		}
		if a := e.post(step.path, step.body); a.Status != http.StatusUnauthorized || a.code() != "replayed_proof" {
			t.Fatalf("%s presented again: %d %s", step.path, a.Status, a.Raw)
		}
	}
}

// TestRefusedRenewProofCannotBeReused: a renewal refused by the store (the
// lease was revoked) spends its proof all the same.
func TestRefusedRenewProofCannotBeReused(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	id := e.mustIssue(w, "readonly", 60).str("lease_id")
	if a := e.post("/v1/leases/"+id+"/revoke", map[string]any{"identity": e.proof(w)}); a.Status != http.StatusOK {
		t.Fatalf("revoke: %d %s", a.Status, a.Raw)
	}
	p := e.proof(w)
	body := map[string]any{"identity": p, "ttl_seconds": 120}
	if a := e.post("/v1/leases/"+id+"/renew", body); a.code() != "lease_revoked" {
		t.Fatalf("renew of a revoked lease: %d %s", a.Status, a.Raw)
	}
	if !nonceRecorded(t, p) {
		t.Fatal("the refused renewal's proof nonce was not recorded")
	}
	if a := e.post("/v1/leases/"+id+"/renew", body); a.code() != "replayed_proof" {
		t.Fatalf("the refused renewal's proof presented again: %d %s", a.Status, a.Raw)
	}
}
