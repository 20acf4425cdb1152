package pgserver

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The tests of this package exercise the throwaway server itself, so they
// ignore an EPHEMERA_TEST_DATABASE_URL from the environment; external mode
// is tested against a throwaway server (TestExternalMode).
func TestMain(m *testing.M) {
	os.Unsetenv(EnvDatabaseURL)
	os.Exit(m.Run())
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func password(t *testing.T, s *Server) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(s.URL())
	if err != nil {
		t.Fatalf("parse URL: %v", err)
	}
	if cfg.Password == "" {
		t.Fatal("URL has no password")
	}
	return cfg.Password
}

func TestStartSettingsAndLogs(t *testing.T) {
	t.Parallel()
	srv := StartTB(t, Options{LogStatements: true})

	if srv.External() {
		t.Fatal("External() = true for a throwaway server")
	}
	if got := srv.Host(); got != "127.0.0.1" {
		t.Errorf("Host() = %q", got)
	}
	if srv.Port() <= 0 {
		t.Errorf("Port() = %d", srv.Port())
	}
	if got := srv.Database(); got != "postgres" {
		t.Errorf("Database() = %q", got)
	}
	wantPrefix := fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable", password(t, srv), srv.Port())
	if srv.URL() != wantPrefix {
		t.Errorf("URL() has unexpected form")
	}
	if pw := password(t, srv); len(pw) != 48 {
		t.Errorf("password has %d characters, want 48 (24 random bytes as hex)", len(pw))
	}

	conn := connect(t, srv.URL())
	if got := queryString(t, conn, "SELECT current_setting('password_encryption')"); got != "scram-sha-256" {
		t.Errorf("password_encryption = %q", got)
	}
	if got := queryString(t, conn, "SHOW log_statement"); got != "all" {
		t.Errorf("log_statement = %q", got)
	}
	if got := queryString(t, conn, "SHOW fsync"); got != "off" {
		t.Errorf("fsync = %q, want off when not Durable", got)
	}
	if got := queryString(t, conn, "SHOW max_connections"); got != "200" {
		t.Errorf("max_connections = %q, want 200", got)
	}
	if got := queryString(t, conn, "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"); !strings.HasPrefix(got, "SCRAM-SHA-256$") {
		t.Errorf("superuser password is not stored as SCRAM")
	}

	marker := "pgserver-marker-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if got := queryString(t, conn, "SELECT '"+marker+"'::text"); got != marker {
		t.Fatalf("marker query returned %q", got)
	}
	logs, err := srv.Logs()
	if err != nil {
		t.Fatalf("Logs: %v", err)
	}
	if !strings.Contains(string(logs), marker) {
		t.Errorf("statement not in server log %s:\n%s", srv.LogFile(), logs)
	}
	if strings.Contains(string(logs), password(t, srv)) {
		t.Errorf("server log contains the superuser password")
	}
	for _, leak := range []string{"ALTER ROLE", "SCRAM-SHA-256$"} {
		if strings.Contains(string(logs), leak) {
			t.Errorf("server log contains %q", leak)
		}
	}
	if srv.bootstrapPassword != "" && strings.Contains(string(logs), srv.bootstrapPassword) {
		t.Errorf("server log contains the template password")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(srv.LogFile()), "pwfile")); !os.IsNotExist(err) {
		t.Errorf("password file still exists after start (stat err %v)", err)
	}
}

func TestOptionsDefaultsOverridden(t *testing.T) {
	t.Parallel()
	srv := StartTB(t, Options{MaxConnections: 37, Durable: true})
	conn := connect(t, srv.URL())
	if got := queryString(t, conn, "SHOW max_connections"); got != "37" {
		t.Errorf("max_connections = %q, want 37", got)
	}
	if got := queryString(t, conn, "SHOW fsync"); got != "on" {
		t.Errorf("fsync = %q, want on when Durable", got)
	}
	if got := queryString(t, conn, "SHOW log_statement"); got != "none" {
		t.Errorf("log_statement = %q, want none", got)
	}
}

func TestWrongPasswordRefused(t *testing.T) {
	t.Parallel()
	srv := StartTB(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := pgx.Connect(ctx, srv.ConnString("postgres", "wrong", "postgres"))
	if err == nil {
		conn.Close(ctx)
		t.Fatal("connecting with a wrong password succeeded")
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("wrong password: got %v, want SQLSTATE 28P01", err)
	}

	// A server copied from the initdb template no longer accepts the
	// template's password.
	if !srv.fromTemplate {
		t.Errorf("server was not started from the initdb template")
	} else {
		conn, err := pgx.Connect(ctx, srv.ConnString("postgres", srv.bootstrapPassword, "postgres"))
		if err == nil {
			conn.Close(ctx)
			t.Fatal("the template password still works")
		}
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Fatalf("template password: got %v, want SQLSTATE 28P01", err)
		}
	}

	// ConnString works for other logins.
	admin := connect(t, srv.URL())
	if _, err := admin.Exec(ctx, "CREATE ROLE app LOGIN PASSWORD 'app-pw'"); err != nil {
		t.Fatal(err)
	}
	app := connect(t, srv.ConnString("app", "app-pw", "postgres"))
	if got := queryString(t, app, "SELECT current_user"); got != "app" {
		t.Errorf("current_user = %q", got)
	}
}

func TestStopRemovesDirAndIsIdempotent(t *testing.T) {
	t.Parallel()
	srv, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(srv.LogFile())
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("server dir: %v", err)
	}
	url := srv.URL()
	if err := srv.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("server dir %s still exists after Stop (stat err %v)", dir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Errorf("server still accepts connections after Stop")
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestTwoServersAtOnce(t *testing.T) {
	t.Parallel()
	a := StartTB(t, Options{})
	b := StartTB(t, Options{})
	if a.Port() == b.Port() {
		t.Fatalf("both servers on port %d", a.Port())
	}
	if a.LogFile() == b.LogFile() {
		t.Fatalf("both servers share log file %s", a.LogFile())
	}
	ca := connect(t, a.URL())
	cb := connect(t, b.URL())
	ctx := context.Background()
	if _, err := ca.Exec(ctx, "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	if got := queryString(t, ca, "SELECT coalesce(to_regclass('only_in_a')::text, '')"); got != "only_in_a" {
		t.Errorf("table missing in server a: %q", got)
	}
	if got := queryString(t, cb, "SELECT coalesce(to_regclass('only_in_a')::text, '')"); got != "" {
		t.Errorf("table from server a visible in server b: %q", got)
	}
	// The passwords are independent too.
	if password(t, a) == password(t, b) {
		t.Errorf("both servers have the same password")
	}
}

func TestListensOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	srv := StartTB(t, Options{})
	conn := connect(t, srv.URL())
	if got := queryString(t, conn, "SHOW listen_addresses"); got != "127.0.0.1" {
		t.Errorf("listen_addresses = %q", got)
	}
	if got := queryString(t, conn, "SELECT host(inet_server_addr())"); got != "127.0.0.1" {
		t.Errorf("inet_server_addr() = %q", got)
	}

	// Nothing answers on the port at any other local address.
	addrs := []string{"::1"}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range ifAddrs {
		ipNet, ok := a.(*net.IPNet)
		if !ok || ipNet.IP.Equal(net.IPv4(127, 0, 0, 1)) || ipNet.IP.IsLinkLocalUnicast() {
			continue
		}
		addrs = append(addrs, ipNet.IP.String())
	}
	for _, ip := range addrs {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, strconv.Itoa(srv.Port())), time.Second)
		if err == nil {
			c.Close()
			t.Errorf("server port %d is reachable on %s", srv.Port(), ip)
		}
	}
}

func TestExternalMode(t *testing.T) {
	// t.Setenv: not parallel.
	host := StartTB(t, Options{})
	admin := connect(t, host.URL())
	hostPW := password(t, host)

	forms := map[string]string{
		"url":           host.URL(),
		"keyword/value": fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password='%s' dbname=postgres sslmode=disable", host.Port(), hostPW),
	}
	for name, dsn := range forms {
		t.Run(name, func(t *testing.T) {
			t.Setenv(EnvDatabaseURL, dsn)
			ext, err := Start(context.Background(), Options{LogStatements: true})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			defer ext.Stop()

			if !ext.External() {
				t.Error("External() = false")
			}
			if ext.Host() != "127.0.0.1" || ext.Port() != host.Port() {
				t.Errorf("Host/Port = %s/%d, want 127.0.0.1/%d", ext.Host(), ext.Port(), host.Port())
			}
			if !strings.HasPrefix(ext.Database(), "ephemera_test_") {
				t.Errorf("Database() = %q", ext.Database())
			}
			if ext.LogFile() != "" {
				t.Errorf("LogFile() = %q, want empty", ext.LogFile())
			}
			if _, err := ext.Logs(); !errors.Is(err, ErrNoLogs) {
				t.Errorf("Logs() error = %v, want ErrNoLogs", err)
			}

			conn := connect(t, ext.URL())
			if got := queryString(t, conn, "SELECT current_database()"); got != ext.Database() {
				t.Errorf("URL() connects to %q, want %q", got, ext.Database())
			}
			if _, err := conn.Exec(context.Background(), "CREATE ROLE ext_app_"+strings.ReplaceAll(name, "/", "_")+" LOGIN PASSWORD 'x'"); err != nil {
				t.Fatal(err)
			}
			app := connect(t, ext.ConnString("ext_app_"+strings.ReplaceAll(name, "/", "_"), "x", ext.Database()))
			if got := queryString(t, app, "SELECT current_user || '@' || current_database()"); got != "ext_app_"+strings.ReplaceAll(name, "/", "_")+"@"+ext.Database() {
				t.Errorf("ConnString connects as %q", got)
			}

			// Stop drops the database even with open connections, and is idempotent.
			if err := ext.Stop(); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			if got := queryString(t, admin, "SELECT count(*)::text FROM pg_database WHERE datname = $1", ext.Database()); got != "0" {
				t.Errorf("test database still exists after Stop")
			}
			if err := ext.Stop(); err != nil {
				t.Errorf("second Stop: %v", err)
			}
		})
	}
}

func TestStartWithoutTemplate(t *testing.T) {
	t.Parallel()
	// The fallback path: a plain initdb with the instance's password.
	// (Not t.TempDir: its parent is private to us, so the postgres OS user
	// could not reach it when we are root.)
	dir, err := os.MkdirTemp("", "pgserver-test-")
	if err != nil {
		t.Fatal(err)
	}
	bindir, err := findBinDir(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: slog.New(slog.DiscardHandler), host: loopback, database: defaultDatabase,
		password: "fallback-pw", base: os.TempDir(), dir: dir, dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "server.log"), bindir: bindir}
	if os.Geteuid() == 0 {
		if s.cred, err = postgresCredential(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = s.Stop() })
	if err := s.initdb(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.startServer(context.Background(), Options{}); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, s.URL())
	if got := queryString(t, conn, "SELECT current_user"); got != "postgres" {
		t.Errorf("current_user = %q", got)
	}
}

func TestLoadTemplateRejectsUnsafeDirs(t *testing.T) {
	t.Parallel()
	uid := uint32(os.Geteuid())
	if _, err := loadTemplate(filepath.Join(t.TempDir(), "missing"), uid); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing template: err = %v, want fs.ErrNotExist", err)
	}

	open := t.TempDir()
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTemplate(open, uid); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("world-readable template accepted or treated as missing: %v", err)
	}

	foreign := t.TempDir()
	if err := os.Chmod(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTemplate(foreign, uid+1); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("template owned by another user accepted or treated as missing: %v", err)
	}

	incomplete := t.TempDir()
	if err := os.Chmod(incomplete, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTemplate(incomplete, uid); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("incomplete template accepted or treated as missing: %v", err)
	}
}

func TestReapOrphans(t *testing.T) {
	t.Parallel()
	srv, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	url := srv.URL()

	// Pretend the owning process has exited.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(srv.dir, ownerFileName), fmt.Appendf(nil, "%d 0\n", dead.Process.Pid), 0o644); err != nil {
		t.Fatal(err)
	}
	reapOrphans(srv.base, srv.bindir, srv.cred, slog.New(slog.DiscardHandler))

	if _, err := os.Stat(srv.dir); !os.IsNotExist(err) {
		t.Errorf("orphaned server directory still exists (stat err %v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Errorf("orphaned server still accepts connections")
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("Stop after reaping: %v", err)
	}
}

func TestReapOrphansSparesLiveServers(t *testing.T) {
	t.Parallel()
	srv := StartTB(t, Options{})
	reapOrphans(srv.base, srv.bindir, srv.cred, slog.New(slog.DiscardHandler))
	if _, err := os.Stat(srv.dir); err != nil {
		t.Fatalf("live server directory was touched: %v", err)
	}
	conn := connect(t, srv.URL())
	if got := queryString(t, conn, "SELECT 'alive'"); got != "alive" {
		t.Errorf("got %q", got)
	}
}

type fakeTB struct {
	fatal    string
	cleanups []func()
}

func (f *fakeTB) Helper()                           {}
func (f *fakeTB) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }
func (f *fakeTB) Cleanup(fn func())                 { f.cleanups = append(f.cleanups, fn) }
func (f *fakeTB) Logf(format string, args ...any)   {}

func TestStartTBFailsWithoutLeakingSecret(t *testing.T) {
	// Port 1 on loopback refuses connections, so Start fails.
	const secret = "sekrit-value-1234"
	t.Setenv(EnvDatabaseURL, "postgres://postgres:"+secret+"@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5")
	var tb fakeTB
	if srv := StartTB(&tb, Options{}); srv != nil {
		t.Fatal("StartTB returned a server for an unreachable database")
	}
	if tb.fatal == "" {
		t.Fatal("StartTB did not call Fatalf")
	}
	if strings.Contains(tb.fatal, secret) {
		t.Errorf("failure message contains the password: %s", tb.fatal)
	}
	if len(tb.cleanups) != 0 {
		t.Errorf("StartTB registered %d cleanups after failing", len(tb.cleanups))
	}
}

func TestStartTBRegistersStop(t *testing.T) {
	t.Parallel()
	var tb fakeTB
	srv := StartTB(&tb, Options{})
	if tb.fatal != "" {
		t.Fatal(tb.fatal)
	}
	if len(tb.cleanups) != 1 {
		t.Fatalf("StartTB registered %d cleanups, want 1", len(tb.cleanups))
	}
	dir := filepath.Dir(srv.LogFile())
	tb.cleanups[0]()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cleanup did not remove %s", dir)
	}
}

// BenchmarkStart measures a full Start+Stop and reports the median start
// time. Run with: go test -run '^$' -bench Start -benchtime 5x
func BenchmarkStart(b *testing.B) {
	var starts []time.Duration
	var opts Options
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	for b.Loop() {
		t0 := time.Now()
		srv, err := Start(context.Background(), opts)
		if err != nil {
			b.Fatal(err)
		}
		starts = append(starts, time.Since(t0))
		if err := srv.Stop(); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(starts)
	b.ReportMetric(float64(starts[len(starts)/2].Milliseconds()), "median-start-ms")
	b.Logf("start times: %v", starts)
}
