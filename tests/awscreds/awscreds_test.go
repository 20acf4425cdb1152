package awscreds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

const (
	// fnName is the function's name, and its execution role's session name, as in Lambda.
	fnName   = "reports-fn"
	execRole = "reports-api"
	roleARN  = "arn:aws:iam::123456789012:role/reports-read"
	wantARN  = "arn:aws:sts::123456789012:assumed-role/reports-read/" + fnName
)

func TestMain(m *testing.M) {
	code := m.Run()
	_ = gobuild.Clean()
	os.Exit(code)
}

// brokerPolicies let the function's execution role assume the profile
// reports-read, and nothing else.
const brokerPolicies = `
@id("reports-assume-read")
permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports-read")
when { principal.account == "123456789012" && principal.role == "reports-api" };
`

// startStack runs the local system (a real broker with its PostgreSQL, the
// STS emulator) whose broker may assume reports-read in the workloads'
// names, logging at Debug level into the returned buffer.
func startStack(t *testing.T) (*stack.Stack, *observe.Buffer) {
	t.Helper()
	logs := &observe.Buffer{}
	s := stack.StartTB(t, stack.Options{
		Policies:    brokerPolicies,
		AWSProfiles: []stack.AWSProfile{{Name: "reports-read", RoleARN: roleARN, MaxTTL: time.Hour}},
		Output:      logs,
		LogLevel:    slog.LevelDebug,
	})
	return s, logs
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
	extDir, err := stack.Extension(context.Background())
	must(t, err)
	fnBin := gobuild.BinaryTB(t, "./testdata/fn", gobuild.Options{Tags: []string{gobuild.NoRPC}, Name: "bootstrap"})
	s, brokerLogs := startStack(t)
	sts := s.STS
	execID := s.Workload(execRole, fnName) // the function's execution role
	port, err := stack.FreePort()
	must(t, err)
	awsURL := "http://127.0.0.1:" + strconv.Itoa(port) + "/v1/aws/reports"

	cfg, err := s.LambdaConfig(execID, extDir, fnBin, map[string]string{
		"EPHEMERA_CREDENTIALS":               "", // no database credential: AWS sessions only
		"EPHEMERA_AWS_PROFILES":              "reports=reports-read:15m",
		"EPHEMERA_PORT":                      strconv.Itoa(port),
		"EPHEMERA_INIT_TIMEOUT":              "20s",
		"AWS_CONTAINER_CREDENTIALS_FULL_URI": awsURL,
		"AWS_CONTAINER_AUTHORIZATION_TOKEN":  execID.SessionToken,
		"TEST_STS_ENDPOINT":                  sts.URL(),
	})
	must(t, err)
	cfg.Timeout, cfg.InitTimeout, cfg.ShutdownTimeout = 30*time.Second, 40*time.Second, 5*time.Second
	cfg.Output = nil // the sandbox's output stays in emu.Logs(), apart from the broker's
	emu := lambdaemu.StartTB(t, cfg)
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
		first.CallerARN != s.BrokerIdentity.ARN || first.Duration != 15*time.Minute {
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
	for _, leak := range observe.Leaks(secrets, map[string]string{
		"the sandbox's logs": logs, "the broker's logs or audit": brokerLogs.String(),
	}) {
		t.Error(leak)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
