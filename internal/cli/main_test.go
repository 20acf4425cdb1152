package cli_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
	"github.com/ephemera-sh/ephemera/broker/pgrole/pgroletest"
	"github.com/ephemera-sh/ephemera/internal/cli"
	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
)

// One throwaway PostgreSQL for the package (never skipped: if it cannot
// start, the package fails), prepared as an operator would (demodb) and
// migrated as the broker would.
var (
	pg       *pgserver.Server
	setup    *demodb.Setup
	admin    *pgxpool.Pool
	adminURL string // the broker's admin role on the test database
)

func TestMain(m *testing.M) {
	pgserver.Main(m, pgserver.Options{}, func(ctx context.Context, s *pgserver.Server) (_ func(), err error) {
		pg = s
		if setup, admin, err = demodb.AdminPool(ctx, s); err != nil {
			return nil, err
		}
		adminURL = s.ConnString(setup.AdminUser, setup.AdminPassword, s.Database())
		return admin.Close, nil
	})
}

// result is one CLI run.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// run runs the CLI in-process with the given arguments.
func run(t *testing.T, args ...string) result {
	t.Helper()
	return runCLI(t, &cli.CLI{}, args...)
}

func runCLI(t *testing.T, c *cli.CLI, args ...string) result {
	t.Helper()
	var out, errb syncBuffer
	c.Stdout, c.Stderr = &out, &errb
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := c.Main(ctx, args)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// runDB runs a database command against the test database.
func runDB(t *testing.T, args ...string) result {
	t.Helper()
	return run(t, append(args, "--url", adminURL)...)
}

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newLabel returns a configured-database name no other test uses: all
// tests share one ephemera.leases table.
func newLabel(t *testing.T) string { return "t" + randHex(t, 5) }

// newPrincipal returns a canonical role ARN no other test uses.
func newPrincipal(t *testing.T, name string) string {
	return "arn:aws:iam::123456789012:role/" + name + "-" + randHex(t, 3)
}

// fixtureRequestID marks what issue writes.
const fixtureRequestID = "fixture"

// issue creates a lease (and its role) for principal in database label,
// issued at issuedAt (which Issue truncates to the second) for ttl.
func issue(t *testing.T, label, principal, session string, issuedAt time.Time, ttl time.Duration) *lease.Lease {
	t.Helper()
	user, _, v := pgroletest.Login(t, "readonly", 16)
	l, err := lease.NewStore(admin, label).Issue(context.Background(), lease.IssueRequest{
		DBRole: "readonly", MemberOf: []string{"orders_read"}, Creation: []pgrole.Template{pgrole.DefaultCreation},
		Username: user, Verifier: v, PrincipalARN: principal, Account: "123456789012", Session: session,
		RequestID: fixtureRequestID, IssuedAt: issuedAt, TTL: ttl, MaxTTL: ttl + time.Hour, MaxLeases: 1000,
		Audit: audit.Record{Time: issuedAt, RequestID: fixtureRequestID, Event: audit.EventIssue, PrincipalARN: principal,
			Account: "123456789012", Session: session, Database: label, DBRole: "readonly", TTLSeconds: int64(ttl / time.Second)},
	})
	must(t, err)
	return l
}

func roleExists(t *testing.T, name string) bool {
	t.Helper()
	var ok bool
	must(t, admin.QueryRow(context.Background(), "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name).Scan(&ok))
	return ok
}

// issued is what the CLI tests read of a broker's answer to POST /v1/credentials.
type issued struct {
	LeaseID  string `json:"lease_id"`
	Username string `json:"username"`
}

// postIssue posts body to url, a broker's POST /v1/credentials, and returns the answer's
// status and the credential it names.
func postIssue(t *testing.T, url string, body []byte) (int, issued) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	must(t, err)
	defer resp.Body.Close()
	var cred issued
	must(t, json.NewDecoder(resp.Body).Decode(&cred))
	return resp.StatusCode, cred
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// syncBuffer is the shared concurrent-safe buffer (serve_test.go names it
// so too).
type syncBuffer = observe.Buffer

// cliWithEnv is an environment for a CLI run.
type cliWithEnv map[string]string

func (e cliWithEnv) cli() *cli.CLI {
	return &cli.CLI{Getenv: func(k string) (string, bool) { v, ok := e[k]; return v, ok }}
}
