package lease_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
	"github.com/ephemera-sh/ephemera/broker/pgrole/pgroletest"
)

func issueRequest(t *testing.T, ttl time.Duration) lease.IssueRequest {
	t.Helper()
	user, _, v := pgroletest.Login(t, "readonly", 64)
	return lease.IssueRequest{
		DBRole: "readonly", MemberOf: []string{"orders_read"}, Creation: []pgrole.Template{pgrole.DefaultCreation},
		Username: user, Verifier: v, PrincipalARN: "arn:aws:iam::123456789012:role/r", Account: "123456789012",
		Session: "fn", RequestID: "test", IssuedAt: time.Now(), TTL: ttl, MaxTTL: time.Hour, MaxLeases: 1000,
	}
}

func roleExists(t *testing.T, name string) bool {
	t.Helper()
	var ok bool
	must(t, admin.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name).Scan(&ok))
	return ok
}

// TestIssueIsAtomic fails the transaction between CREATE ROLE and the lease
// insert: no role may remain, and no lease.
func TestIssueIsAtomic(t *testing.T) {
	s := lease.NewStore(admin, "orders")
	boom := errors.New("simulated crash before the lease insert")
	var sawRole bool
	s.SetBeforeLeaseInsert(func(ctx context.Context) error {
		sawRole = true
		return boom
	})
	r := issueRequest(t, time.Minute)
	r.RequestID = "atomic-" + r.Username
	r.Audit = audit.Record{RequestID: r.RequestID, Event: audit.EventIssue}
	_, err := s.Issue(context.Background(), r)
	if !errors.Is(err, boom) {
		t.Fatalf("Issue error %v, want the hook's", err)
	}
	if !sawRole {
		t.Fatal("the hook did not run")
	}
	if roleExists(t, r.Username) {
		t.Fatal("the role survived a failed issue transaction")
	}
	var n, rows int
	must(t, admin.QueryRow(context.Background(), "SELECT count(*) FROM ephemera.leases WHERE username = $1", r.Username).Scan(&n))
	must(t, admin.QueryRow(context.Background(), "SELECT count(*) FROM ephemera.audit_log WHERE request_id = $1", r.RequestID).Scan(&rows))
	if n != 0 || rows != 0 {
		t.Fatalf("a lease row (%d) or its audit row (%d) survived", n, rows)
	}
}

func TestRenewAndRevoke(t *testing.T) {
	ctx := context.Background()
	s := lease.NewStore(admin, "orders")
	l, err := s.Issue(ctx, issueRequest(t, time.Minute))
	must(t, err)
	if got, err := s.Get(ctx, l.ID); err != nil || got.Username != l.Username || !got.ExpiresAt.Equal(l.ExpiresAt) {
		t.Fatalf("Get: %+v %v", got, err)
	}
	renewed, err := s.Renew(ctx, lease.RenewRequest{ID: l.ID, TTL: 2 * time.Hour, Renewal: []pgrole.Template{pgrole.DefaultRenewal}})
	must(t, err)
	if !renewed.ExpiresAt.Equal(l.MaxExpiresAt) {
		t.Fatalf("renew capped at %s, want max %s", renewed.ExpiresAt, l.MaxExpiresAt)
	}
	rev, now, err := s.Revoke(ctx, lease.RevokeRequest{ID: l.ID, Reason: "test"})
	must(t, err)
	if !now || rev.RevokedAt == nil || roleExists(t, l.Username) {
		t.Fatalf("revoke: %+v, role exists %v", rev, roleExists(t, l.Username))
	}
	again, now, err := s.Revoke(ctx, lease.RevokeRequest{ID: l.ID, Reason: "again"})
	must(t, err)
	if now || !again.RevokedAt.Equal(*rev.RevokedAt) || again.RevokeReason != "test" {
		t.Fatalf("second revoke changed the lease: %+v", again)
	}
	if _, err := s.Renew(ctx, lease.RenewRequest{ID: l.ID, TTL: time.Minute, Renewal: []pgrole.Template{pgrole.DefaultRenewal}}); !errors.Is(err, lease.ErrRevoked) {
		t.Fatalf("renew after revoke: %v", err)
	}
	if _, err := s.Get(ctx, "00000000-0000-4000-8000-000000000000"); !errors.Is(err, lease.ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}
}

func TestRevokeRoleAlreadyGone(t *testing.T) {
	ctx := context.Background()
	s := lease.NewStore(admin, "orders")
	l, err := s.Issue(ctx, issueRequest(t, time.Minute))
	must(t, err)
	ident, _ := pgrole.QuoteIdentifier(l.Username)
	_, err = admin.Exec(ctx, "DROP ROLE "+ident)
	must(t, err)
	rev, _, err := s.Revoke(ctx, lease.RevokeRequest{ID: l.ID, Reason: "test"})
	if err != nil || rev.RevokedAt == nil {
		t.Fatalf("revoke of a lease whose role is gone: %+v %v", rev, err)
	}
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- lease.Migrate(context.Background(), admin) }()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	files, err := os.ReadDir("migrations")
	must(t, err)
	var n int
	must(t, admin.QueryRow(context.Background(), "SELECT count(*) FROM ephemera.schema_migrations").Scan(&n))
	if n != len(files) {
		t.Fatalf("%d migration rows, want one per migration file (%d)", n, len(files))
	}
}

// TestNonces: NonceSeen only reads (a nonce read twice is still fresh for
// UseNonce), UseNonce records once, and NonceSeen then sees it.
func TestNonces(t *testing.T) {
	ctx := context.Background()
	s := lease.NewStore(admin, "orders")
	nonce := randomName("nonce_")
	exp := time.Now().Add(time.Minute)
	for range 2 {
		seen, err := s.NonceSeen(ctx, nonce)
		must(t, err)
		if seen {
			t.Fatal("NonceSeen reports a nonce nobody recorded")
		}
	}
	fresh, err := s.UseNonce(ctx, nonce, exp)
	must(t, err)
	again, err := s.UseNonce(ctx, nonce, exp)
	must(t, err)
	if !fresh || again {
		t.Fatalf("first use fresh=%v, second fresh=%v", fresh, again)
	}
	seen, err := s.NonceSeen(ctx, nonce)
	must(t, err)
	if !seen {
		t.Fatal("NonceSeen does not see a recorded nonce")
	}
}

func TestIssueRefusesForeignUsername(t *testing.T) {
	s := lease.NewStore(admin, "orders")
	r := issueRequest(t, time.Minute)
	r.Username = "postgres"
	if _, err := s.Issue(context.Background(), r); err == nil {
		t.Fatal("Issue accepted a username it did not generate")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestMarkerGroupOf: over a migrated database it reads the store's marker
// group; over one without schema ephemera it answers "" (what preflight
// checks before the first migration).
func TestMarkerGroupOf(t *testing.T) {
	ctx := context.Background()
	got, err := lease.MarkerGroupOf(ctx, admin)
	must(t, err)
	want, err := lease.NewStore(admin, "orders").MarkerGroup(ctx)
	must(t, err)
	if got == "" || got != want {
		t.Fatalf("MarkerGroupOf = %q, want the store's %q", got, want)
	}
	other, err := adminPool(ctx, adminDSNFor(otherDatabase(t, true)), 1)
	must(t, err)
	defer other.Close()
	if got, err := lease.MarkerGroupOf(ctx, other); err != nil || got != "" {
		t.Fatalf("MarkerGroupOf before any migration = %q, %v; want \"\", nil", got, err)
	}
}

// TestRevokeReturnsTheStoredExpiry: the lease Revoke returns carries the
// expiry its first step stored (the database's clock once it held the
// row), not a time computed beside it.
func TestRevokeReturnsTheStoredExpiry(t *testing.T) {
	ctx := context.Background()
	s := lease.NewStore(admin, randomName("expiry_"))
	l, _ := issueWithPassword(t, s, "orders_read", time.Hour)
	got, revokedNow, err := s.Revoke(ctx, lease.RevokeRequest{ID: l.ID, Reason: "test",
		Audit: audit.Record{RequestID: "expiry", Event: audit.EventRevoke}})
	must(t, err)
	var stored time.Time
	must(t, admin.QueryRow(ctx, `SELECT expires_at FROM ephemera.leases WHERE lease_id = $1`, l.ID).Scan(&stored))
	if !revokedNow || !got.ExpiresAt.Equal(stored) || !got.ExpiresAt.Before(l.ExpiresAt) {
		t.Fatalf("revoked now %v, returned expiry %s, stored %s, issued with %s", revokedNow, got.ExpiresAt, stored, l.ExpiresAt)
	}
}
