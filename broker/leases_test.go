package broker_test

import (
	"context"
	"net/http"
	"testing"
	"time"
)

func (e *env) renew(w workload, leaseID string, ttl int) answer {
	e.t.Helper()
	body := map[string]any{"identity": e.proof(w)}
	if ttl > 0 {
		body["ttl_seconds"] = ttl
	}
	return e.post("/v1/leases/"+leaseID+"/renew", body)
}

func (e *env) revoke(w workload, leaseID string) answer {
	e.t.Helper()
	return e.post("/v1/leases/"+leaseID+"/revoke", map[string]any{"identity": e.proof(w)})
}

func validUntil(t *testing.T, user string) time.Time {
	t.Helper()
	var ts time.Time
	must(t, superuser(t).QueryRow(context.Background(), `SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1`, user).Scan(&ts))
	return ts
}

func TestRenewNeverPassesMaxExpiry(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	a := e.mustIssue(w, "short", 60) // max_ttl 2m
	id, user := a.str("lease_id"), a.str("username")
	maxExp := parseTime(t, a.str("max_expires_at"))

	r := e.renew(w, id, 90)
	if r.Status != http.StatusOK {
		t.Fatalf("renew: %d %s", r.Status, r.Raw)
	}
	exp := parseTime(t, r.str("expires_at"))
	if exp.After(maxExp) || exp.Before(parseTime(t, a.str("expires_at"))) {
		t.Fatalf("renewed to %s; issued expiry %s, max %s", exp, a.str("expires_at"), maxExp)
	}
	if !validUntil(t, user).Equal(exp) {
		t.Fatalf("VALID UNTIL %s, lease %s", validUntil(t, user), exp)
	}
	// Asking for the whole max_ttl again is capped at max_expires_at.
	r = e.renew(w, id, 120)
	if r.Status != http.StatusOK || !parseTime(t, r.str("expires_at")).Equal(maxExp) || !parseTime(t, r.str("max_expires_at")).Equal(maxExp) {
		t.Fatalf("renew to max: %d %s (max %s)", r.Status, r.Raw, maxExp)
	}
	if !validUntil(t, user).Equal(maxExp) {
		t.Fatalf("VALID UNTIL %s after capped renew, want %s", validUntil(t, user), maxExp)
	}
	// Above the role's max_ttl is an error.
	if r := e.renew(w, id, 121); r.Status != 400 || r.code() != "ttl_exceeds_max" {
		t.Fatalf("renew above max_ttl: %d %s", r.Status, r.Raw)
	}
	if row := auditOne(t, r.RequestID); row.Event != "renew" || row.Decision != "allow" {
		t.Fatalf("audit %+v", row)
	}
}

// parties returns the three callers of the holder-only cases: the lease's
// holder (an orders-api role), another orders-api role, and an admin_revoke
// principal (incident-responder).
func (e *env) parties() (holder, other, admin workload) {
	return e.workload("orders-api-role", "fn"), e.workload("orders-api-other", "fn2"), e.workload("incident-responder", "ir")
}

func TestRenewOnlyByHolder(t *testing.T) {
	e := newEnv(t, envOptions{})
	holder, other, admin := e.parties()
	a := e.mustIssue(holder, "readonly", 60)
	before := validUntil(t, a.str("username"))
	for _, w := range []workload{other, admin} {
		r := e.renew(w, a.str("lease_id"), 600)
		if r.Status != http.StatusForbidden || r.code() != "access_denied" {
			t.Fatalf("renew by %s: %d %s", w.id.ARN, r.Status, r.Raw)
		}
		if row := auditOne(t, r.RequestID); row.Decision != "deny" || row.Reason != "access_denied" {
			t.Fatalf("audit %+v", row)
		}
	}
	if !validUntil(t, a.str("username")).Equal(before) {
		t.Fatal("a refused renew moved VALID UNTIL")
	}
	if r := e.renew(holder, "00000000-0000-4000-8000-000000000000", 60); r.Status != 404 || r.code() != "not_found" {
		t.Fatalf("renew unknown lease: %d %s", r.Status, r.Raw)
	}
}

func TestRenewExpiredAndRevoked(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	a := e.mustIssue(w, "readonly", 1)
	time.Sleep(1100 * time.Millisecond)
	if r := e.renew(w, a.str("lease_id"), 60); r.Status != http.StatusConflict || r.code() != "lease_expired" {
		t.Fatalf("renew expired: %d %s", r.Status, r.Raw)
	}
	b := e.mustIssue(w, "readonly", 60)
	if r := e.revoke(w, b.str("lease_id")); r.Status != 200 {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	if r := e.renew(w, b.str("lease_id"), 60); r.Status != http.StatusConflict || r.code() != "lease_revoked" {
		t.Fatalf("renew revoked: %d %s", r.Status, r.Raw)
	}
}

func TestRevokeTerminatesSessionsAndIsIdempotent(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "fn")
	a := e.mustIssue(w, "readonly", 600)
	user := a.str("username")
	conn, err := login(t, a)
	must(t, err)
	ctx := context.Background()
	_, err = conn.Exec(ctx, "SELECT 1")
	must(t, err)

	r := e.revoke(w, a.str("lease_id"))
	if r.Status != http.StatusOK || r.str("lease_id") != a.str("lease_id") || r.str("revoked_at") == "" {
		t.Fatalf("revoke: %d %s", r.Status, r.Raw)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("the revoked user's open session still works")
	}
	if roleExists(t, user) {
		t.Fatal("the role still exists after revoke")
	}
	if _, err := login(t, a); err == nil {
		t.Fatal("the revoked credential still logs in")
	}
	again := e.revoke(w, a.str("lease_id"))
	if again.Status != http.StatusOK || again.str("revoked_at") != r.str("revoked_at") {
		t.Fatalf("second revoke: %d %s (first %s)", again.Status, again.Raw, r.Raw)
	}
	if row := auditOne(t, r.RequestID); row.Event != "revoke" || row.Decision != "allow" || row.Username != user {
		t.Fatalf("audit %+v", row)
	}
}

func TestRevokeOnlyByHolderOrAdmin(t *testing.T) {
	e := newEnv(t, envOptions{})
	holder, other, admin := e.parties()
	a := e.mustIssue(holder, "readonly", 600)
	r := e.revoke(other, a.str("lease_id"))
	if r.Status != http.StatusForbidden || r.code() != "access_denied" {
		t.Fatalf("revoke by another principal: %d %s", r.Status, r.Raw)
	}
	if !roleExists(t, a.str("username")) {
		t.Fatal("a refused revoke dropped the role")
	}
	r = e.revoke(admin, a.str("lease_id"))
	if r.Status != http.StatusOK {
		t.Fatalf("revoke by admin_revoke principal: %d %s", r.Status, r.Raw)
	}
	if roleExists(t, a.str("username")) {
		t.Fatal("the role survived an admin revoke")
	}
}

func TestAdminRevoke(t *testing.T) {
	e := newEnv(t, envOptions{})
	victim := e.workload("orders-api-victim", "fn")
	admin := e.workload("incident-responder", "ir")
	notAdmin := e.workload("orders-api-role", "fn")
	a1 := e.mustIssue(victim, "readonly", 600)
	a2 := e.mustIssue(victim, "readonly", 600)
	arn := "arn:aws:iam::123456789012:role/orders-api-victim"

	r := e.post("/v1/admin/revoke", map[string]any{"identity": e.proof(notAdmin), "principal_arn": arn})
	if r.Status != http.StatusForbidden || r.code() != "access_denied" {
		t.Fatalf("admin revoke by non-admin: %d %s", r.Status, r.Raw)
	}
	if !roleExists(t, a1.str("username")) || !roleExists(t, a2.str("username")) {
		t.Fatal("a denied admin revoke revoked something")
	}
	r = e.post("/v1/admin/revoke", map[string]any{"identity": e.proof(admin), "principal_arn": arn, "database": "orders"})
	if r.Status != http.StatusOK || r.Body["revoked"] != float64(2) {
		t.Fatalf("admin revoke: %d %s", r.Status, r.Raw)
	}
	if roleExists(t, a1.str("username")) || roleExists(t, a2.str("username")) {
		t.Fatal("roles survived an admin revoke")
	}
	rows := auditRows(t, r.RequestID)
	if len(rows) != 2 || rows[0].Event != "admin_revoke" || rows[0].Decision != "allow" || !contains(rows[0].Policies, "incident-responders") {
		t.Fatalf("audit %+v", rows)
	}
	r = e.post("/v1/admin/revoke", map[string]any{"identity": e.proof(admin), "principal_arn": arn})
	if r.Status != http.StatusOK || r.Body["revoked"] != float64(0) {
		t.Fatalf("second admin revoke: %d %s", r.Status, r.Raw)
	}
}
