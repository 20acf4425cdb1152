package awscreds_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ephemera-sh/ephemera/broker"
	brokerconfig "github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

const (
	account  = "123456789012"
	region   = "us-east-1"
	audience = "test-reports"
	// fnName is the function's name, and its execution role's session name, as in Lambda.
	fnName   = "reports-fn"
	execRole = "reports-api"
	roleARN  = "arn:aws:iam::123456789012:role/reports-read"
	wantARN  = "arn:aws:sts::123456789012:assumed-role/reports-read/" + fnName
)

// Binaries built once by TestMain.
var (
	extDir string // stands for /opt/extensions: holds the extension as "ephemera"
	fnBin  string // testdata/fn, built with -tags lambda.norpc
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "awscreds-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	extDir, fnBin = filepath.Join(dir, "extensions"), filepath.Join(dir, "fn", "bootstrap")
	for _, args := range [][]string{
		{"build", "-o", filepath.Join(extDir, "ephemera"), "github.com/ephemera-sh/ephemera/extension"},
		{"build", "-tags", "lambda.norpc", "-o", fnBin, "./testdata/fn"},
	} {
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go %s: %v\n%s", strings.Join(args, " "), err, out)
			return 1
		}
	}
	return m.Run()
}

// syncBuffer is an io.Writer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

const brokerConfig = `
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
aws_profiles:
  reports-read:
    role_arn: arn:aws:iam::123456789012:role/reports-read
    max_ttl: 1h
`

const brokerPolicies = `
@id("reports-assume-read")
permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports-read")
when { principal.account == "123456789012" && principal.role == "reports-api" };
`

// startBroker runs a real broker, with its own PostgreSQL (the broker keeps nonces and
// its audit there), whose AWS identity may assume reports-read at sts. It serves on a
// loopback http.Server until the test ends and returns its URL and its log and audit
// output.
func startBroker(t *testing.T, sts *stsserver.Server) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pg := pgserver.StartTB(t, pgserver.Options{})
	setup, err := demodb.Bootstrap(ctx, pg.URL())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	polDir := filepath.Join(dir, "policies")
	must(t, os.Mkdir(polDir, 0o755))
	must(t, os.WriteFile(filepath.Join(polDir, "reports.cedar"), []byte(brokerPolicies), 0o644))
	cfgPath := filepath.Join(dir, "ephemera.yaml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(brokerConfig, pg.Port(), pg.Database())), 0o644))
	vars := map[string]string{
		"EPHEMERA_CONFIG":       cfgPath,
		"EPHEMERA_POLICY_DIR":   polDir,
		"EPHEMERA_AUDIENCE":     audience,
		"EPHEMERA_STS_ENDPOINT": sts.URL(),
		"EPHEMERA_STAGE":        "test",
		"AWS_REGION":            region,
		"TEST_ORDERS_ADMIN_DSN": pg.ConnString(setup.AdminUser, setup.AdminPassword, pg.Database()),
	}
	getenv := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	cfg, err := brokerconfig.FromEnv(getenv)
	must(t, err)

	// The broker's own role, which the profile's role trusts.
	brokerID := stsserver.NewIdentity(account, "ephemera-broker", "broker")
	sts.Add(brokerID)
	sts.AddRole(stsserver.Role{ARN: roleARN, TrustedPrincipals: []string{"arn:aws:iam::123456789012:role/ephemera-broker"}})
	awsCfg := aws.Config{Region: region, Credentials: credentials.NewStaticCredentialsProvider(
		brokerID.AccessKeyID, brokerID.SecretAccessKey, brokerID.SessionToken)}

	logs := &syncBuffer{}
	b, err := broker.New(ctx, broker.Options{
		AWS: &awsCfg, Config: cfg, Getenv: getenv, AuditOut: logs,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	must(t, err)
	t.Cleanup(b.Close)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), logs
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// fnResponse is testdata/fn's answer.
type fnResponse struct {
	ARN         string `json:"arn"`
	AccessKeyID string `json:"access_key_id"`
	Source      string `json:"source"`
	ErrorCode   string `json:"error_code"`
	Error       string `json:"error"`
}

func invoke(t *testing.T, emu *lambdaemu.Emulator, payload string) fnResponse {
	t.Helper()
	res, err := emu.Invoke(context.Background(), []byte(payload))
	if err != nil {
		t.Fatalf("invoke: %v\nlogs:\n%s", err, emu.Logs())
	}
	if res.ErrorType != "" {
		t.Fatalf("invoke: %s %s\nlogs:\n%s", res.ErrorType, res.Payload, emu.Logs())
	}
	var r fnResponse
	if err := json.Unmarshal(res.Payload, &r); err != nil {
		t.Fatalf("answer %s: %v", res.Payload, err)
	}
	return r
}

// readLocal sends GET url to the extension, thawing the sandbox for the time of the
// request (the emulator freezes it between invocations, as Lambda does).
func readLocal(t *testing.T, emu *lambdaemu.Emulator, url string, header http.Header) (int, []byte) {
	t.Helper()
	must(t, emu.Thaw())
	defer func() { must(t, emu.Freeze()) }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	must(t, err)
	req.Header = header
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, body
}

// containerCredentials is the AWS SDKs' container-credentials document.
type containerCredentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

// reportsSessions returns the sessions STS minted for reports-read, in order.
func reportsSessions(sts *stsserver.Server) []stsserver.Session {
	var out []stsserver.Session
	for _, s := range sts.Sessions() {
		if s.RoleARN == roleARN {
			out = append(out, s)
		}
	}
	return out
}

// TestAWSCredentialsEndToEnd: a function built with unmodified aws-sdk-go-v2, whose only
// AWS configuration is AWS_CONTAINER_CREDENTIALS_FULL_URI (the extension) and
// AWS_CONTAINER_AUTHORIZATION_TOKEN, signs STS requests as the profile's role in its own
// name; after the session's Expiration STS refuses it, while the extension serves a fresh
// one; and no secret key or session token is ever logged.
func TestAWSCredentialsEndToEnd(t *testing.T) {
	sts := stsserver.StartTB(t)
	brokerURL, brokerLogs := startBroker(t, sts)
	execID := stsserver.NewIdentity(account, execRole, fnName) // the function's execution role
	sts.Add(execID)
	port := freePort(t)
	awsURL := "http://127.0.0.1:" + strconv.Itoa(port) + "/v1/aws/reports"

	emu := lambdaemu.StartTB(t, lambdaemu.Config{
		ExtensionsDir: extDir,
		Bootstrap:     fnBin,
		FunctionName:  fnName,
		Region:        region,
		AccessKeyID:   execID.AccessKeyID, SecretAccessKey: execID.SecretAccessKey, SessionToken: execID.SessionToken,
		Env: map[string]string{
			"EPHEMERA_BROKER_URL":                brokerURL,
			"EPHEMERA_AUDIENCE":                  audience,
			"EPHEMERA_AWS_PROFILES":              "reports=reports-read:15m",
			"EPHEMERA_PORT":                      strconv.Itoa(port),
			"EPHEMERA_INIT_TIMEOUT":              "20s",
			"AWS_CONTAINER_CREDENTIALS_FULL_URI": awsURL,
			"AWS_CONTAINER_AUTHORIZATION_TOKEN":  execID.SessionToken,
			"TEST_STS_ENDPOINT":                  sts.URL(),
		},
		Timeout:         30 * time.Second,
		InitTimeout:     40 * time.Second,
		ShutdownTimeout: 5 * time.Second,
		Freeze:          true,
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sandbox logs:\n%s\nbroker logs:\n%s", emu.Logs(), brokerLogs)
		}
	})

	// INIT assumed the profile's role once, in the workload's name.
	sessions := reportsSessions(sts)
	if len(sessions) != 1 {
		t.Fatalf("%d reports-read sessions after INIT", len(sessions))
	}
	first := sessions[0]
	if first.RoleSessionName != fnName || first.SourceIdentity != execRole ||
		first.CallerARN != "arn:aws:sts::123456789012:assumed-role/ephemera-broker/broker" || first.Duration != 15*time.Minute {
		t.Fatalf("session %+v", first)
	}

	// 1. The function signs GetCallerIdentity with the extension's session.
	r := invoke(t, emu, `{}`)
	if r.ARN != wantARN || r.Error != "" {
		t.Fatalf("first invocation: %+v", r)
	}
	if r.AccessKeyID != first.Identity.AccessKeyID || r.Source != "CredentialsEndpointProvider" {
		t.Fatalf("the function used %s from %q, not the session %s from the extension", r.AccessKeyID, r.Source, first.Identity.AccessKeyID)
	}

	// The extension's answer is the container-credentials document, and the token is
	// checked.
	status, body := readLocal(t, emu, awsURL, http.Header{"Authorization": {execID.SessionToken}})
	var doc containerCredentials
	if status != 200 || json.Unmarshal(body, &doc) != nil {
		t.Fatalf("read: %d", status)
	}
	if doc.AccessKeyID != first.Identity.AccessKeyID || doc.SecretAccessKey != first.Identity.SecretAccessKey ||
		doc.Token != first.Identity.SessionToken || doc.Expiration != first.Expiration.UTC().Format(time.RFC3339) {
		t.Fatalf("read: AccessKeyId %s Expiration %s, want %s %s", doc.AccessKeyID, doc.Expiration,
			first.Identity.AccessKeyID, first.Expiration.UTC().Format(time.RFC3339))
	}
	if status, _ := readLocal(t, emu, awsURL, http.Header{"Authorization": {"not-the-token"}}); status != 401 {
		t.Fatalf("wrong token: %d", status)
	}

	// 2. The extension serves a fresh session when asked (its own refresh rule, which the
	// agent's tests drive with a fake clock, does the same 5 minutes before Expiration).
	// Wait two seconds first, so that the fresh session expires at least a second later.
	time.Sleep(time.Until(first.Issued.Add(2100 * time.Millisecond)))
	status, body = readLocal(t, emu, awsURL+"?refresh=true", http.Header{"X-Ephemera-Token": {execID.SessionToken}})
	var fresh containerCredentials
	if status != 200 || json.Unmarshal(body, &fresh) != nil {
		t.Fatalf("refresh: %d", status)
	}
	sessions = reportsSessions(sts)
	if len(sessions) != 2 || fresh.AccessKeyID == first.Identity.AccessKeyID || fresh.AccessKeyID != sessions[1].Identity.AccessKeyID {
		t.Fatalf("refresh served %s; sessions %d", fresh.AccessKeyID, len(sessions))
	}
	second := sessions[1]
	if !second.Expiration.After(first.Expiration.Add(time.Second)) || second.RoleSessionName != fnName {
		t.Fatalf("fresh session %+v after %+v", second, first)
	}

	// 3. Past the first session's Expiration (STS clock moved), STS refuses its keys,
	// which the function's SDK still holds in its cache...
	sts.SetClock(func() time.Time { return first.Expiration.Add(time.Second) })
	defer sts.SetClock(nil)
	r = invoke(t, emu, `{}`)
	if r.AccessKeyID != first.Identity.AccessKeyID || r.ErrorCode != "ExpiredToken" || r.ARN != "" {
		t.Fatalf("expired session: %+v", r)
	}
	// ... while the fresh session the extension already serves is accepted.
	r = invoke(t, emu, `{"invalidate": true}`)
	if r.AccessKeyID != second.Identity.AccessKeyID || r.ARN != wantARN || r.Error != "" {
		t.Fatalf("fresh session: %+v", r)
	}
	sts.SetClock(nil)
	if n := len(reportsSessions(sts)); n != 2 {
		t.Fatalf("%d sessions: reading the cached session must not assume again", n)
	}

	// SHUTDOWN: the extension exits by itself (nothing to revoke).
	res, err := emu.Shutdown(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(res.Exited, "ephemera") {
		t.Fatalf("shutdown: exited %v, killed %v", res.Exited, res.Killed)
	}

	// Never a secret access key or session token in any log.
	logs := emu.Logs()
	if !strings.Contains(logs, `"msg":"AWS session issued"`) || !strings.Contains(logs, first.Identity.AccessKeyID) {
		t.Fatalf("the extension's logs lack the issued sessions:\n%s", logs)
	}
	secrets := map[string]string{
		"the execution role's secret key":    execID.SecretAccessKey,
		"the execution role's session token": execID.SessionToken,
	}
	for i, s := range reportsSessions(sts) {
		secrets[fmt.Sprintf("session %d's secret key", i+1)] = s.Identity.SecretAccessKey
		secrets[fmt.Sprintf("session %d's session token", i+1)] = s.Identity.SessionToken
	}
	for what, secret := range secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("%s is in the sandbox's logs", what)
		}
		if strings.Contains(brokerLogs.String(), secret) {
			t.Errorf("%s is in the broker's logs or audit", what)
		}
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
