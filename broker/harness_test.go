package broker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

const (
	audience = "test-orders"
	region   = "us-east-1"
	account  = "123456789012"
)

// Policies used unless a test brings its own.
const basePolicies = `
@id("orders-api-reads-orders")
permit (principal, action == Ephemera::Action::"issue", resource == Ephemera::DatabaseRole::"orders/readonly")
when { principal.account == "123456789012" && principal.role like "orders-api-*" && context.ttl_seconds <= 900 };

@id("orders-api-limited")
permit (principal, action == Ephemera::Action::"issue", resource == Ephemera::DatabaseRole::"orders/limited")
when { principal.account == "123456789012" && principal.role like "orders-api-*" };

@id("orders-api-short")
permit (principal, action == Ephemera::Action::"issue", resource == Ephemera::DatabaseRole::"orders/short")
when { principal.account == "123456789012" && principal.role like "orders-api-*" };

@id("holders-renew-and-revoke")
permit (principal, action in [Ephemera::Action::"renew", Ephemera::Action::"revoke"], resource in Ephemera::Database::"orders")
when { principal.account == "123456789012" };

@id("incident-responders")
permit (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/incident-responder",
        action == Ephemera::Action::"admin_revoke", resource == Ephemera::Database::"orders");

@id("reports-assume-read")
permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports-read")
when { principal.role like "reports-*" };

@id("quarantine")
forbid (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/orders-api-compromised", action, resource);
`

const baseConfig = `
databases:
  orders:
    host: 127.0.0.1
    port: %d
    dbname: %s
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: TEST_ORDERS_ADMIN_DSN}
    scram_iterations: 4096
    roles:
      readonly:
        member_of: [orders_read]
        default_ttl: 15m
        max_ttl: 1h
        max_leases: 500
      limited:
        member_of: [orders_read]
        max_leases: 2
      short:
        member_of: [orders_read]
        default_ttl: 1m
        max_ttl: 2m
aws_profiles:
  reports-read:
    role_arn: arn:aws:iam::123456789012:role/reports-read
    max_ttl: 30m
    session_tags: {team: reports}
  billing-admin:
    role_arn: arn:aws:iam::123456789012:role/billing-admin
`

// env is one broker under test with its STS, log buffers and HTTP server.
type env struct {
	t      *testing.T
	sts    *stsserver.Server
	broker *broker.Broker
	srv    *httptest.Server
	logs   *observe.Buffer // operational logs
	audits *observe.Buffer // audit lines
}

type envOptions struct {
	policies *string // nil: basePolicies
	now      func() time.Time
	// dbPort, when set, is where the broker reaches PostgreSQL (a fault
	// proxy in front of the test server).
	dbPort int
	// env adds or overrides the broker's environment (EPHEMERA_DB_TIMEOUT...).
	env map[string]string
	// yaml is appended to the configuration (top-level keys).
	yaml string
	// databases is added to the configuration's databases (entries indented
	// by two spaces; %[1]d is PostgreSQL's port, %[2]s its database).
	databases string
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, sts: stsserver.StartTB(t), logs: &observe.Buffer{}, audits: &observe.Buffer{}}
	b, err := startBroker(t, o, e.sts, e.logs, e.audits)
	must(t, err)
	e.broker = b
	e.srv = httptest.NewServer(e.broker.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// startBroker writes the configuration and policies to a temp dir and starts a broker.
func startBroker(t *testing.T, o envOptions, sts *stsserver.Server, logs, audits io.Writer) (*broker.Broker, error) {
	t.Helper()
	dir := t.TempDir()
	pol := basePolicies
	if o.policies != nil {
		pol = *o.policies
	}
	polDir := filepath.Join(dir, "policies")
	must(t, os.Mkdir(polDir, 0o755))
	if pol != "" {
		must(t, os.WriteFile(filepath.Join(polDir, "orders.cedar"), []byte(pol), 0o644))
	}
	cfgPath := filepath.Join(dir, "ephemera.yaml")
	port := pg.Port()
	adminDSN := pg.ConnString(setup.AdminUser, setup.AdminPassword, pg.Database())
	if o.dbPort != 0 {
		port = o.dbPort
		adminDSN = strings.Replace(adminDSN, fmt.Sprintf(":%d/", pg.Port()), fmt.Sprintf(":%d/", o.dbPort), 1)
	}
	doc := fmt.Sprintf(baseConfig, port, pg.Database())
	if o.databases != "" {
		doc = strings.Replace(doc, "aws_profiles:", fmt.Sprintf(o.databases, port, pg.Database())+"aws_profiles:", 1)
	}
	must(t, os.WriteFile(cfgPath, []byte(doc+o.yaml), 0o644))
	vars := map[string]string{
		"EPHEMERA_CONFIG":       cfgPath,
		"EPHEMERA_POLICY_DIR":   polDir,
		"EPHEMERA_AUDIENCE":     audience,
		"EPHEMERA_STS_ENDPOINT": sts.URL(),
		"EPHEMERA_STAGE":        "test",
		"AWS_REGION":            region,
		"TEST_ORDERS_ADMIN_DSN": adminDSN,
	}
	for k, v := range o.env {
		vars[k] = v
	}
	getenv := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	cfg, err := config.FromEnv(getenv)
	must(t, err)
	// The broker's own role, trusted by the profiles' roles.
	brokerID := stsserver.NewIdentity(account, "ephemera-broker", "broker")
	sts.Add(brokerID)
	for _, role := range []string{"reports-read", "billing-admin"} {
		sts.AddRole(stsserver.Role{ARN: "arn:aws:iam::123456789012:role/" + role,
			TrustedPrincipals: []string{"arn:aws:iam::123456789012:role/ephemera-broker"}})
	}
	awsCfg := aws.Config{Region: region, Credentials: credentials.NewStaticCredentialsProvider(
		brokerID.AccessKeyID, brokerID.SecretAccessKey, brokerID.SessionToken)}
	b, err := broker.New(context.Background(), broker.Options{
		AWS:      &awsCfg,
		Config:   cfg,
		Logger:   slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		AuditOut: audits,
		Getenv:   getenv,
		Now:      o.now,
	})
	if err == nil {
		t.Cleanup(b.Close)
	}
	return b, err
}

// workload is an identity known to the STS emulator.
type workload struct {
	id    stsserver.Identity
	creds aws.Credentials
}

func (e *env) workload(role, session string) workload {
	return e.workloadIn(account, role, session)
}

func (e *env) workloadIn(acct, role, session string) workload {
	id := stsserver.NewIdentity(acct, role, session)
	e.sts.Add(id)
	return workload{id: id, creds: aws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken}}
}

func (e *env) proof(w workload) *attest.Proof {
	e.t.Helper()
	p, err := attest.Sign(context.Background(), w.creds, region, audience, time.Now())
	must(e.t, err)
	return p
}

// answer is a decoded API response.
type answer struct {
	Status    int
	RequestID string
	Header    http.Header
	Body      map[string]any
	Raw       []byte
}

func (a answer) code() string {
	if e, ok := a.Body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

func (a answer) str(k string) string { s, _ := a.Body[k].(string); return s }

func (e *env) post(path string, body any) answer {
	e.t.Helper()
	data, err := json.Marshal(body)
	must(e.t, err)
	return e.postRaw(path, "application/json", data)
}

func (e *env) postRaw(path, contentType string, data []byte) answer {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(data))
	must(e.t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) answer {
	e.t.Helper()
	resp, err := e.srv.Client().Do(req)
	must(e.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	must(e.t, err)
	a := answer{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id"), Header: resp.Header, Raw: raw}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		e.t.Fatalf("%s %s: Content-Type %q, want application/json", req.Method, req.URL.Path, ct)
	}
	if err := json.Unmarshal(raw, &a.Body); err != nil {
		e.t.Fatalf("%s %s: body is not JSON: %v: %s", req.Method, req.URL.Path, err, raw)
	}
	if a.RequestID == "" {
		e.t.Fatalf("%s %s: no X-Request-Id", req.Method, req.URL.Path)
	}
	if a.code() != "" {
		if rid, _ := a.Body["error"].(map[string]any)["request_id"].(string); rid != a.RequestID {
			e.t.Fatalf("error request_id %q != X-Request-Id %q", rid, a.RequestID)
		}
	}
	return a
}

func (e *env) issue(w workload, role string, ttl int) answer {
	e.t.Helper()
	body := map[string]any{"identity": e.proof(w), "database": "orders", "role": role}
	if ttl > 0 {
		body["ttl_seconds"] = ttl
	}
	return e.post("/v1/credentials", body)
}

func (e *env) mustIssue(w workload, role string, ttl int) answer {
	e.t.Helper()
	a := e.issue(w, role, ttl)
	if a.Status != http.StatusCreated {
		e.t.Fatalf("issue %s: %d %s", role, a.Status, a.Raw)
	}
	return a
}

// auditRow is the audit_log row of a request.
type auditRow struct {
	Event, Decision, Reason, PrincipalARN, Username, LeaseID string
	Policies                                                 []string
	TTLSeconds                                               int64
}

func auditRows(t *testing.T, requestID string) []auditRow {
	t.Helper()
	conn := superuser(t)
	rows, err := conn.Query(context.Background(), `SELECT event, decision, reason, principal_arn, username,
		coalesce(lease_id::text, ''), policies, ttl_seconds FROM ephemera.audit_log WHERE request_id = $1 ORDER BY id`, requestID)
	must(t, err)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (r auditRow, err error) {
		err = row.Scan(&r.Event, &r.Decision, &r.Reason, &r.PrincipalARN, &r.Username, &r.LeaseID, &r.Policies, &r.TTLSeconds)
		return r, err
	})
	must(t, err)
	return out
}

// auditOne asserts exactly one audit row for requestID and returns it.
func auditOne(t *testing.T, requestID string) auditRow {
	t.Helper()
	rows := auditRows(t, requestID)
	if len(rows) != 1 {
		t.Fatalf("audit rows for %s: %d, want 1: %+v", requestID, len(rows), rows)
	}
	return rows[0]
}

func superuser(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), pg.URL())
	must(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// ephemeralRoles counts roles carrying the ephemera prefix.
func ephemeralRoles(t *testing.T) int {
	t.Helper()
	var n int
	must(t, superuser(t).QueryRow(context.Background(), `SELECT count(*) FROM pg_roles WHERE rolname LIKE 'eph\_%'`).Scan(&n))
	return n
}

func roleExists(t *testing.T, name string) bool {
	t.Helper()
	var ok bool
	must(t, superuser(t).QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, name).Scan(&ok))
	return ok
}

// login connects as the issued credential.
func login(t *testing.T, cred answer) (*pgx.Conn, error) {
	t.Helper()
	port := int(cred.Body["port"].(float64))
	dsn := fmt.Sprintf("host=%s port=%d dbname=%s user=%s password=%s sslmode=%s",
		cred.str("host"), port, cred.str("dbname"), cred.str("username"), cred.str("password"), cred.str("sslmode"))
	conn, err := pgx.Connect(context.Background(), dsn)
	if err == nil {
		t.Cleanup(func() { conn.Close(context.Background()) })
	}
	return conn, err
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func parseTime(t *testing.T, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339, s)
	must(t, err)
	return ts
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var _ = strings.Contains
