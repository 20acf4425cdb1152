package lease_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
	"github.com/ephemera-sh/ephemera/broker/pgrole/pgroletest"
)

// adminPool opens a pool the way the broker does: every connection
// hardened by admindb.Harden (search_path pinned to pg_catalog, pg_temp).
// maxConns 0 keeps pgxpool's default.
func adminPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	admindb.Harden(pc.ConnConfig)
	if maxConns > 0 {
		pc.MaxConns = maxConns
	}
	return pgxpool.NewWithConfig(ctx, pc)
}

// suExec runs sql as the cluster's superuser in database dbname ("" for
// the test database).
func suExec(t testing.TB, dbname, sql string, args ...any) {
	t.Helper()
	if dbname == "" {
		dbname = pg.Database()
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, superuserDSN(dbname))
	must(t, err)
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("superuser in %s: %v", dbname, err)
	}
}

// superuserDSN is the superuser's connection string for dbname.
func superuserDSN(dbname string) string {
	u, err := url.Parse(pg.URL())
	if err != nil {
		panic(err)
	}
	u.Path = "/" + dbname
	return u.String()
}

// userConn connects as an issued user to dbname.
func userConn(t testing.TB, username, password, dbname string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pg.ConnString(username, password, dbname))
	must(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// randomName returns prefix followed by 8 random lowercase hex digits.
func randomName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// issueWithPassword issues a lease of group, marked as Issue marks users,
// and returns it with its password.
func issueWithPassword(t testing.TB, s *lease.Store, group string, ttl time.Duration) (*lease.Lease, string) {
	t.Helper()
	ctx := context.Background()
	user, pw, v := pgroletest.Login(t, "test", 64)
	mark, err := s.MarkTemplate(ctx)
	must(t, err)
	l, err := s.Issue(ctx, lease.IssueRequest{
		DBRole: "test", MemberOf: []string{group}, Creation: []pgrole.Template{pgrole.DefaultCreation, mark},
		Username: user, Verifier: v, PrincipalARN: "arn:aws:iam::123456789012:role/r", Account: "123456789012",
		Session: "fn", RequestID: "test", IssuedAt: time.Now(), TTL: ttl, MaxTTL: time.Hour, MaxLeases: 100000,
	})
	must(t, err)
	return l, pw
}

// adminDSNFor is the admin's connection string for dbname.
func adminDSNFor(dbname string) string {
	cc := admin.Config().ConnConfig
	return pg.ConnString(cc.User, cc.Password, dbname)
}

// freshDatabase creates an empty database where the admin role has CONNECT
// and CREATE, as an operator would prepare one, and returns a hardened
// admin pool to it. Both go when the test ends.
func freshDatabase(t testing.TB) *pgxpool.Pool {
	t.Helper()
	name := randomName("ephemera_t_")
	suExec(t, "", "CREATE DATABASE "+name)
	suExec(t, "", "GRANT CONNECT, CREATE ON DATABASE "+name+" TO ephemera_admin")
	pool, err := adminPool(context.Background(), adminDSNFor(name), 4)
	must(t, err)
	t.Cleanup(func() {
		pool.Close()
		suExec(t, "", "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return pool
}
