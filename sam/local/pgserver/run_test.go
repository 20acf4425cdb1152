package pgserver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeM stands for *testing.M: it runs tests, here a function.
type fakeM struct {
	ran  bool
	code int
	test func()
}

func (m *fakeM) Run() int {
	m.ran = true
	if m.test != nil {
		m.test()
	}
	return m.code
}

// TestRunPreparesRunsAndStops: Run starts a server, gives it to setup, runs
// the tests against it, runs the teardown while the server still answers,
// stops it, and returns the tests' status.
func TestRunPreparesRunsAndStops(t *testing.T) {
	var srv *Server
	var answeredInTests, answeredInTeardown bool
	ping := func() bool {
		conn := connect(t, srv.URL())
		return queryString(t, conn, "SELECT 'up'") == "up"
	}
	m := &fakeM{code: 3, test: func() { answeredInTests = ping() }}
	code := Run(m, Options{}, func(ctx context.Context, s *Server) (func(), error) {
		srv = s
		return func() { answeredInTeardown = ping() }, nil
	})
	if code != 3 || !m.ran {
		t.Fatalf("Run = %d (tests ran: %v), want the tests' status 3", code, m.ran)
	}
	if !answeredInTests || !answeredInTeardown {
		t.Fatalf("server answered in the tests: %v, in the teardown: %v", answeredInTests, answeredInTeardown)
	}
	if _, err := os.Stat(filepath.Dir(srv.LogFile())); !os.IsNotExist(err) {
		t.Fatalf("the server's directory is still there after Run: %v", err)
	}
}

// captureMainOut collects Run's messages for the test.
func captureMainOut(t *testing.T) *strings.Builder {
	var b strings.Builder
	old := mainOut
	mainOut = &b
	t.Cleanup(func() { mainOut = old })
	return &b
}

// TestRunFailsWhenSetupFails: a failing setup means no tests, a non-zero
// status (never a skip), its teardown called, and the server stopped.
func TestRunFailsWhenSetupFails(t *testing.T) {
	out := captureMainOut(t)
	var srv *Server
	tornDown := false
	m := &fakeM{}
	code := Run(m, Options{}, func(ctx context.Context, s *Server) (func(), error) {
		srv = s
		return func() { tornDown = true }, errors.New("no schema")
	})
	if code == 0 || m.ran {
		t.Fatalf("Run = %d, tests ran: %v; want non-zero and no tests", code, m.ran)
	}
	if !strings.Contains(out.String(), "FAIL: test PostgreSQL: pgserver: setup: no schema") {
		t.Errorf("Run said %q", out.String())
	}
	if !tornDown {
		t.Error("the teardown of a failed setup was not called")
	}
	if _, err := os.Stat(filepath.Dir(srv.LogFile())); !os.IsNotExist(err) {
		t.Fatalf("the server's directory is still there: %v", err)
	}
}

// TestRunFailsWithoutServer: when no server can start, the tests do not run
// and the status is non-zero.
func TestRunFailsWithoutServer(t *testing.T) {
	out := captureMainOut(t)
	const secret = "run-secret-5678"
	t.Setenv(EnvDatabaseURL, "postgres://postgres:"+secret+"@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5")
	m := &fakeM{}
	setupCalled := false
	code := Run(m, Options{}, func(context.Context, *Server) (func(), error) { setupCalled = true; return nil, nil })
	if code == 0 || m.ran || setupCalled {
		t.Fatalf("Run = %d, tests ran: %v, setup called: %v", code, m.ran, setupCalled)
	}
	if !strings.HasPrefix(out.String(), "FAIL: test PostgreSQL:") || strings.Contains(out.String(), secret) {
		t.Errorf("Run said %q: want a FAIL line without the password", out.String())
	}
}
