package lease_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole/pgroletest"
)

// otherDatabase creates a second database of the cluster where the writer
// group may connect and create tables in schema public (what an ephemeral
// user finds in template1 or postgres on many clusters). With adminCanConnect
// false, CONNECT is taken from PUBLIC, so the admin role cannot reach it.
func otherDatabase(t *testing.T, adminCanConnect bool) string {
	t.Helper()
	name := randomName("ephemera_other_")
	suExec(t, "", "CREATE DATABASE "+name)
	t.Cleanup(func() { suExec(t, "", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	suExec(t, name, "GRANT CREATE ON SCHEMA public TO orders_write")
	if !adminCanConnect {
		suExec(t, "", "REVOKE CONNECT ON DATABASE "+name+" FROM PUBLIC; GRANT CONNECT ON DATABASE "+name+" TO orders_write")
	}
	return name
}

// plant makes the user own a table in dbname and set default privileges there.
func plant(t *testing.T, l *lease.Lease, password, dbname string) string {
	t.Helper()
	conn := userConn(t, l.Username, password, dbname)
	table := "public.t_" + l.Username[len(l.Username)-12:]
	_, err := conn.Exec(context.Background(), "CREATE TABLE "+table+" (id int); ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC")
	must(t, err)
	must(t, conn.Close(context.Background()))
	return table
}

// TestRevokeReachesOtherDatabases: a user that owns a table and default
// privileges in another database of the cluster is revoked all the same:
// the table goes to its group there, the default privileges are gone, and
// so is the role. Both paths: Revoke and the reaper's ReapExpired.
func TestRevokeReachesOtherDatabases(t *testing.T) {
	ctx := context.Background()
	other := otherDatabase(t, true)
	s := lease.NewStore(admin, "crossdb")
	byRevoke, pw1 := issueWithPassword(t, s, "orders_write", time.Minute)
	byReap, pw2 := issueWithPassword(t, s, "orders_write", 2*time.Second)
	tables := []string{plant(t, byRevoke, pw1, other), plant(t, byReap, pw2, other)}

	if _, _, err := s.Revoke(ctx, lease.RevokeRequest{ID: byRevoke.ID, Reason: "test"}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	time.Sleep(time.Until(byReap.ExpiresAt) + 100*time.Millisecond)
	out, err := s.ReapExpired(ctx, time.Now(), 100, "expired", nil)
	must(t, err)
	var reaped bool
	for _, o := range out {
		if o.Lease.ID == byReap.ID {
			reaped = o.Err == nil
			if o.Err != nil {
				t.Fatalf("reap: %v", o.Err)
			}
		}
	}
	if !reaped {
		t.Fatalf("the expired lease was not reaped: %+v", out)
	}
	for _, l := range []*lease.Lease{byRevoke, byReap} {
		if roleExists(t, l.Username) {
			t.Fatalf("role %s survived its revocation", l.Username)
		}
	}
	su, err := pgx.Connect(ctx, superuserDSN(other))
	must(t, err)
	defer su.Close(ctx)
	for _, table := range tables {
		var owner string
		must(t, su.QueryRow(ctx, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = $1::regclass", table).Scan(&owner))
		if owner != "orders_write" {
			t.Fatalf("%s in %s owned by %q, want orders_write", table, other, owner)
		}
	}
	var defaults int
	must(t, su.QueryRow(ctx, "SELECT count(*) FROM pg_default_acl").Scan(&defaults))
	if defaults != 0 {
		t.Fatalf("%d default privilege entries left in %s", defaults, other)
	}
	if pgroletest.Member(t, admin, "orders_write") {
		t.Fatal("the admin role kept the membership it borrowed")
	}
}

// TestRevokeNamesUnreachableDatabase: when the admin cannot connect to a
// database where the user left objects, the revocation fails, the role
// stays (no half state), and the error and the lease's last_error (for
// the retry) name the database. Once the admin may connect, the reaper finishes the job.
func TestRevokeNamesUnreachableDatabase(t *testing.T) {
	ctx := context.Background()
	other := otherDatabase(t, false)
	s := lease.NewStore(admin, "crossdb_denied")
	l, pw := issueWithPassword(t, s, "orders_write", time.Minute)
	plant(t, l, pw, other)

	_, _, err := s.Revoke(ctx, lease.RevokeRequest{ID: l.ID, Reason: "test"})
	if err == nil || !strings.Contains(err.Error(), other) {
		t.Fatalf("revoke error %v, want one naming %s", err, other)
	}
	if !roleExists(t, l.Username) {
		t.Fatal("the role is gone although its objects in the other database remain")
	}
	// The reaper's path records the same.
	_, err = admin.Exec(ctx, "UPDATE ephemera.leases SET next_attempt_at = NULL WHERE lease_id = $1", l.ID)
	must(t, err)
	out, err := s.ReapExpired(ctx, time.Now(), 100, "expired", nil)
	must(t, err)
	var failure error
	for _, o := range out {
		if o.Lease.ID == l.ID {
			failure = o.Err
		}
	}
	if failure == nil || !strings.Contains(failure.Error(), other) {
		t.Fatalf("reap outcome %v, want a failure naming %s", failure, other)
	}
	var lastError string
	must(t, admin.QueryRow(ctx, "SELECT coalesce(last_error, '') FROM ephemera.leases WHERE lease_id = $1", l.ID).Scan(&lastError))
	if !strings.Contains(lastError, other) {
		t.Fatalf("last_error %q does not name %s", lastError, other)
	}

	suExec(t, "", "GRANT CONNECT ON DATABASE "+other+" TO ephemera_admin")
	_, err = admin.Exec(ctx, "UPDATE ephemera.leases SET next_attempt_at = NULL WHERE lease_id = $1", l.ID)
	must(t, err)
	out, err = s.ReapExpired(ctx, time.Now(), 100, "expired", nil)
	must(t, err)
	for _, o := range out {
		if o.Lease.ID == l.ID && o.Err != nil {
			t.Fatalf("reap after the grant: %v", errors.Unwrap(o.Err))
		}
	}
	if roleExists(t, l.Username) {
		t.Fatal("the role survived the reap after the admin could connect")
	}
}

// TestOtherDatabaseSignsInLikeThePool: with RDS IAM auth the pool has no
// password, only a BeforeConnect hook that signs a token per connection;
// the connection to another database must sign in the same way (a token
// cached from the pool's first connection would have expired).
func TestOtherDatabaseSignsInLikeThePool(t *testing.T) {
	ctx := context.Background()
	other := otherDatabase(t, true)
	pc, err := pgxpool.ParseConfig(adminDSNFor(pg.Database()))
	must(t, err)
	password := pc.ConnConfig.Password
	pc.ConnConfig.Password = ""
	var signed atomic.Int32
	pc.BeforeConnect = func(_ context.Context, cc *pgx.ConnConfig) error {
		signed.Add(1)
		cc.Password = password
		return nil
	}
	admindb.Harden(pc.ConnConfig)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	must(t, err)
	defer pool.Close()
	s := lease.NewStore(pool, randomName("iam_"))
	l, pw := issueWithPassword(t, s, "orders_write", 2*time.Second)
	plant(t, l, pw, other)
	before := signed.Load()
	time.Sleep(time.Until(l.ExpiresAt) + 100*time.Millisecond)
	out, err := s.ReapExpired(ctx, time.Now(), 10, "expired", nil)
	must(t, err)
	if len(out) != 1 || out[0].Err != nil {
		t.Fatalf("reap: %+v", out)
	}
	if roleExists(t, l.Username) {
		t.Fatal("the role survived")
	}
	if signed.Load() <= before {
		t.Fatal("the connection to the other database did not sign in through BeforeConnect")
	}
}
