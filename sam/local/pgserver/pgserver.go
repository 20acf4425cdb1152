package pgserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// EnvDatabaseURL is the environment variable that switches Start to
// external mode: when it holds a PostgreSQL connection string, Start creates
// a fresh database on that server instead of starting a server of its own.
const EnvDatabaseURL = "EPHEMERA_TEST_DATABASE_URL"

// ErrNoLogs is returned by Server.Logs in external mode, where the server
// log is not accessible.
var ErrNoLogs = errors.New("pgserver: no server log in external mode")

const (
	superuser         = "postgres"
	defaultDatabase   = "postgres"
	loopback          = "127.0.0.1"
	defaultMaxConns   = 200
	startAttempts     = 4 // first try plus up to 3 retries on a port clash
	stopTimeout       = 30 * time.Second
	logTailBytes      = 4096
	externalDBPrefix  = "ephemera_test_"
	osUserForPostgres = "postgres"
)

// Options configure Start. The zero value is fine.
type Options struct {
	// LogStatements sets log_statement=all, so every statement appears in
	// the server log (tests grep the log for leaked secrets).
	LogStatements bool
	// MaxConnections is the server's max_connections. Zero means 200.
	MaxConnections int
	// Durable keeps PostgreSQL's crash safety. By default (false) fsync,
	// synchronous_commit and full_page_writes are switched off for speed.
	Durable bool
	// Logger, if not nil, receives start and stop messages. It never
	// receives a password.
	Logger *slog.Logger
}

// Server is a running throwaway PostgreSQL server, or, in external mode, a
// fresh database on an existing server. Its methods are safe for concurrent
// use.
type Server struct {
	log *slog.Logger

	host     string
	port     int
	database string
	password string   // superuser password (throwaway mode)
	secrets  []string // further secrets to redact from errors

	// Throwaway mode.
	base              string // parent of dir
	dir               string // temporary directory holding everything
	dataDir           string
	logFile           string
	bindir            string
	cred              *syscall.Credential // non-nil when running the server as another OS user
	fromTemplate      bool                // data directory copied from the initdb template
	bootstrapPassword string              // the template's superuser password, replaced at start

	// External mode.
	external   bool
	baseConn   string // connection string from EnvDatabaseURL
	url        string // connection string for the test database
	externalDB string

	mu      sync.Mutex
	stopped bool
}

// Start starts a throwaway PostgreSQL server (or, when EPHEMERA_TEST_DATABASE_URL
// is set, creates a fresh database on that server) and waits until it
// answers queries. The caller must call Stop when done.
func Start(ctx context.Context, opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if dsn := os.Getenv(EnvDatabaseURL); dsn != "" {
		return startExternal(ctx, dsn, log)
	}
	return startLocal(ctx, opts, log)
}

// URL returns the superuser connection string, in the form
// postgres://USER:PASS@127.0.0.1:PORT/DBNAME?sslmode=disable. In external
// mode it is the connection string from EPHEMERA_TEST_DATABASE_URL pointed
// at the fresh test database.
func (s *Server) URL() string {
	if s.external {
		return s.url
	}
	return s.ConnString(superuser, s.password, s.database)
}

// ConnString returns a connection string for another login (user and
// password) and database on the same server.
func (s *Server) ConnString(user, password, dbname string) string {
	if s.external {
		return overrideConnString(s.baseConn, user, password, dbname)
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     net.JoinHostPort(s.host, strconv.Itoa(s.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Host returns the host the server listens on: "127.0.0.1" for a throwaway
// server, the configured host in external mode.
func (s *Server) Host() string { return s.host }

// Port returns the TCP port the server listens on.
func (s *Server) Port() int { return s.port }

// Database returns the name of the database tests should use: "postgres"
// for a throwaway server, the freshly created database in external mode.
func (s *Server) Database() string { return s.database }

// LogFile returns the path of the server log file, or "" in external mode.
// The file is deleted by Stop.
func (s *Server) LogFile() string { return s.logFile }

// Logs returns the current contents of the server log. In external mode it
// returns ErrNoLogs.
func (s *Server) Logs() ([]byte, error) {
	if s.external {
		return nil, ErrNoLogs
	}
	b, err := os.ReadFile(s.logFile)
	if err != nil {
		return nil, fmt.Errorf("pgserver: read server log: %w", err)
	}
	return b, nil
}

// External reports whether the server is an external one selected with
// EPHEMERA_TEST_DATABASE_URL.
func (s *Server) External() bool { return s.external }

// Stop stops the server and deletes its directory (in external mode: drops
// the test database). It is idempotent: calls after the first return nil.
func (s *Server) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	if s.external {
		return s.stopExternal()
	}
	return s.stopLocal()
}

// TB is the subset of testing.TB that StartTB needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
	Logf(format string, args ...any)
}

// StartTB is Start with context.Background() for tests. It calls tb.Fatalf
// on any failure (it never skips) and registers Stop with tb.Cleanup.
func StartTB(tb TB, opts Options) *Server {
	tb.Helper()
	s, err := Start(context.Background(), opts)
	if err != nil {
		tb.Fatalf("pgserver.StartTB: %v", err)
		return nil // only reached with a TB whose Fatalf returns
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Logf("pgserver.StartTB: stop: %v", err)
		}
	})
	return s
}

// ---------------------------------------------------------------------------
// Helpers.

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// redact removes every known secret from err's message, keeping err
// available to errors.Is and errors.As.
func (s *Server) redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	for _, secret := range append([]string{s.password}, s.secrets...) {
		if secret != "" && strings.Contains(msg, secret) {
			msg = strings.ReplaceAll(msg, secret, "[REDACTED]")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
