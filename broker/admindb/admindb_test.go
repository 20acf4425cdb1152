package admindb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

var (
	pg    *pgserver.Server
	setup *demodb.Setup
)

func TestMain(m *testing.M) {
	pgserver.Main(m, pgserver.Options{}, func(ctx context.Context, s *pgserver.Server) (_ func(), err error) {
		pg = s
		setup, err = demodb.Bootstrap(ctx, s.URL())
		return nil, err
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func suExec(t *testing.T, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pg.URL())
	must(t, err)
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("superuser: %v", err)
	}
}

// database is the demo database as configured, with the given admin login
// and the demo's groups.
func database(name, user, envName string) *config.Database {
	return &config.Database{Name: name, Host: pg.Host(), Port: pg.Port(), DBName: pg.Database(), SSLMode: "disable",
		Admin: config.Admin{User: user, Auth: "dsn", DSNEnv: envName},
		Roles: map[string]*config.Role{
			"readonly": {Name: "readonly", MemberOf: []string{"orders_read"}},
			"writer":   {Name: "writer", MemberOf: []string{"orders_write", "orders_read"}},
		}}
}

// weakAdmin creates a login that has CREATEROLE and nothing else ephemera
// needs, and returns its name and password.
func weakAdmin(t *testing.T) (string, string) {
	t.Helper()
	name := fmt.Sprintf("weak_admin_%d", time.Now().UnixNano()%1e9)
	suExec(t, "CREATE ROLE "+name+" LOGIN CREATEROLE PASSWORD 'weak-admin-test-only'")
	t.Cleanup(func() { suExec(t, "DROP OWNED BY "+name+"; DROP ROLE IF EXISTS "+name) })
	return name, "weak-admin-test-only"
}

func pool(t *testing.T, user, password string) *pgxpool.Pool {
	t.Helper()
	db := database("orders", user, "ADMIN_DSN")
	p, err := admindb.Connect(context.Background(), db, admindb.Options{Getenv: func(string) (string, bool) {
		return pg.ConnString(user, password, pg.Database()), true
	}})
	must(t, err)
	t.Cleanup(p.Close)
	return p
}

// TestPreflightPasses: the admin role as the README prepares it passes.
func TestPreflightPasses(t *testing.T) {
	p := pool(t, setup.AdminUser, setup.AdminPassword)
	if err := admindb.Preflight(context.Background(), p, database("orders", setup.AdminUser, "X"), ""); err != nil {
		t.Fatalf("Preflight of a fully privileged admin: %v", err)
	}
}

// TestPreflightNamesEachMissingGrant: an admin without pg_signal_backend,
// without CREATE on the database, and a member_of group that does not
// exist: one error, classifiable, listing each statement to run.
func TestPreflightNamesEachMissingGrant(t *testing.T) {
	user, pw := weakAdmin(t)
	db := database("orders", user, "X")
	db.Roles["ghost"] = &config.Role{Name: "ghost", MemberOf: []string{"no_such_group"}}
	err := admindb.Preflight(context.Background(), pool(t, user, pw), db, "")
	if !errors.Is(err, admindb.ErrPrivileges) {
		t.Fatalf("Preflight error %v, want ErrPrivileges", err)
	}
	var pe *admindb.PrivilegeError
	if !errors.As(err, &pe) || pe.Admin != user || pe.Database != "orders" {
		t.Fatalf("error %#v", err)
	}
	for _, want := range []string{
		"GRANT pg_signal_backend TO " + user + ";",
		"GRANT CREATE ON DATABASE " + pg.Database() + " TO " + user + ";",
		"CREATE ROLE no_such_group NOLOGIN;",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "CREATEROLE") {
		t.Errorf("error asks for CREATEROLE, which the role has:\n%v", err)
	}
	// Granting what it named makes the check pass.
	suExec(t, "GRANT pg_signal_backend TO "+user+"; GRANT CREATE ON DATABASE "+pg.Database()+" TO "+user)
	delete(db.Roles, "ghost")
	if err := admindb.Preflight(context.Background(), pool(t, user, pw), db, ""); err != nil {
		t.Fatalf("after the grants: %v", err)
	}
}

// TestHardenPinsSearchPath: every connection of an admin pool starts with
// the pinned search_path.
func TestHardenPinsSearchPath(t *testing.T) {
	var path string
	must(t, pool(t, setup.AdminUser, setup.AdminPassword).QueryRow(context.Background(), "SHOW search_path").Scan(&path))
	if path != admindb.SearchPath {
		t.Fatalf("search_path %q, want %q", path, admindb.SearchPath)
	}
}

// TestDoctorReport: one line per configured database (ok, or the missing
// grants), and a warning with the REVOKE statement for every database of
// the cluster that PUBLIC may connect to and ephemera does not manage.
func TestDoctorReport(t *testing.T) {
	ctx := context.Background()
	extra := fmt.Sprintf("doctor_extra_%d", time.Now().UnixNano()%1e9)
	suExec(t, "CREATE DATABASE "+extra)
	t.Cleanup(func() { suExec(t, "DROP DATABASE IF EXISTS "+extra+" WITH (FORCE)") })
	user, pw := weakAdmin(t)
	cfg := &config.Config{AdminPoolSize: 1, Databases: map[string]*config.Database{
		"orders": database("orders", setup.AdminUser, "GOOD_DSN"),
		"weak":   database("weak", user, "WEAK_DSN"),
	}}
	env := map[string]string{
		"GOOD_DSN": pg.ConnString(setup.AdminUser, setup.AdminPassword, pg.Database()),
		"WEAK_DSN": pg.ConnString(user, pw, pg.Database()),
	}
	var out bytes.Buffer
	err := admindb.Doctor(ctx, &out, cfg, admindb.Options{Getenv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	report := out.String()
	if !errors.Is(err, admindb.ErrAttention) || !errors.Is(err, admindb.ErrPrivileges) {
		t.Fatalf("Doctor error %v, want ErrAttention wrapping ErrPrivileges\n%s", err, report)
	}
	for _, want := range []string{
		fmt.Sprintf("orders (%s@%s:%d/%s): ok\n", setup.AdminUser, pg.Host(), pg.Port(), pg.Database()),
		"GRANT pg_signal_backend TO " + user + ";\n",
		"REVOKE CONNECT ON DATABASE template1 FROM PUBLIC;\n",
		"REVOKE CONNECT ON DATABASE " + extra + " FROM PUBLIC;\n",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "REVOKE CONNECT ON DATABASE "+pg.Database()+" ") {
		t.Errorf("report tells to revoke CONNECT on a configured database:\n%s", report)
	}
	if strings.Contains(report, pw) || strings.Contains(report, setup.AdminPassword) {
		t.Fatal("the report contains a password")
	}
	// Everything fixed, the revocations applied: no error, no warning.
	suExec(t, "GRANT pg_signal_backend TO "+user+"; GRANT CREATE ON DATABASE "+pg.Database()+" TO "+user+
		"; REVOKE CONNECT ON DATABASE template1 FROM PUBLIC; REVOKE CONNECT ON DATABASE "+extra+" FROM PUBLIC")
	t.Cleanup(func() { suExec(t, "GRANT CONNECT ON DATABASE template1 TO PUBLIC") })
	out.Reset()
	if err := admindb.Doctor(ctx, &out, cfg, admindb.Options{Getenv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}); err != nil {
		t.Fatalf("Doctor after the fixes: %v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "warning") {
		t.Fatalf("warning after the revocations:\n%s", out.String())
	}
}
