package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

const (
	testAudience = "cli-test"
	testRegion   = "us-east-1"
)

// brokerEnv writes a broker configuration (database "orders" on the test
// server) and policies, and returns the broker's environment.
func brokerEnv(t *testing.T, stsURL string) cliWithEnv {
	t.Helper()
	dir := t.TempDir()
	polDir := filepath.Join(dir, "policies")
	must(t, os.Mkdir(polDir, 0o755))
	must(t, os.WriteFile(filepath.Join(polDir, "orders.cedar"), []byte(`
@id("orders-api-reads-orders")
permit (principal, action == Ephemera::Action::"issue", resource == Ephemera::DatabaseRole::"orders/readonly")
when { principal.role like "orders-api*" };`), 0o600))
	cfg := filepath.Join(dir, "ephemera.yaml")
	must(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`
databases:
  orders:
    host: %s
    port: %d
    dbname: %s
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: TEST_ADMIN_DSN}
    scram_iterations: 16
    roles:
      readonly:
        member_of: [orders_read]
`, pg.Host(), pg.Port(), pg.Database())), 0o600))
	return cliWithEnv{
		"EPHEMERA_CONFIG":       cfg,
		"EPHEMERA_POLICY_DIR":   polDir,
		"EPHEMERA_AUDIENCE":     testAudience,
		"EPHEMERA_STS_ENDPOINT": stsURL,
		"AWS_REGION":            testRegion,
		"TEST_ADMIN_DSN":        adminURL,
	}
}

// waitFor polls buf until it contains s, or the command ends.
func waitFor(t *testing.T, buf *syncBuffer, s string, done <-chan int) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if out := buf.String(); strings.Contains(out, s) {
			return out
		}
		select {
		case code := <-done:
			t.Fatalf("the command ended (exit %d) before printing %q:\n%s", code, s, buf.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q within a minute:\n%s", s, buf.String())
	return ""
}

func TestBrokerServe(t *testing.T) {
	sts := stsserver.StartTB(t)
	c := brokerEnv(t, sts.URL()).cli()
	var out, errb syncBuffer
	c.Stdout, c.Stderr = &out, &errb
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- c.Main(ctx, []string{"broker", "serve", "--listen", "127.0.0.1:0"}) }()

	var addr string
	for _, l := range lines(waitFor(t, &errb, `"msg":"broker listening"`, done)) {
		var m struct{ Msg, Addr string }
		if json.Unmarshal([]byte(l), &m) == nil && m.Msg == "broker listening" {
			addr = m.Addr
		}
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("listening on %q:\n%s", addr, errb.String())
	}
	base := "http://" + addr

	resp, err := http.Get(base + "/v1/health")
	must(t, err)
	var health map[string]string
	must(t, json.NewDecoder(resp.Body).Decode(&health))
	resp.Body.Close()
	if resp.StatusCode != 200 || health["status"] != "ok" || resp.Header.Get("X-Request-Id") == "" {
		t.Fatalf("health: %d %v", resp.StatusCode, health)
	}

	// The real handler: a workload gets a credential.
	id := stsserver.NewIdentity("123456789012", "orders-api-"+randHex(t, 3), "orders-api-fn")
	sts.Add(id)
	proof, err := attest.Sign(ctx, aws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken},
		testRegion, testAudience, time.Now())
	must(t, err)
	body, _ := json.Marshal(map[string]any{"identity": proof, "database": "orders", "role": "readonly", "ttl_seconds": 300})
	status, cred := postIssue(t, base+"/v1/credentials", body)
	if status != http.StatusCreated || cred.LeaseID == "" {
		t.Fatalf("issue: %d %+v\n%s", status, cred, errb.String())
	}
	waitFor(t, &out, `"event":"issue"`, done) // audit lines on stdout

	// The operator sees it, and can revoke the workload in one command.
	r := runDB(t, "leases", "--database", "orders")
	if r.code != 0 || !strings.Contains(r.stdout, cred.LeaseID) || !strings.Contains(r.stdout, "orders-api-fn") {
		t.Errorf("leases: %v", r)
	}
	roleARN := "arn:aws:iam::123456789012:role/" + strings.Split(strings.TrimPrefix(id.ARN, "arn:aws:sts::123456789012:assumed-role/"), "/")[0]
	r = runDB(t, "revoke", "--principal", roleARN)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "1 lease revoked") || roleExists(t, cred.Username) {
		t.Errorf("revoke --principal: %v", r)
	}

	// SIGINT/SIGTERM cancel the context: a graceful shutdown, exit 0.
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d:\n%s", code, errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("broker serve did not stop")
	}
	if !strings.Contains(errb.String(), `"msg":"shutting down"`) {
		t.Errorf("no shutdown log:\n%s", errb.String())
	}
	if _, err := http.Get(base + "/v1/health"); err == nil {
		t.Error("still serving after shutdown")
	}
}

func TestReaperRun(t *testing.T) {
	env := brokerEnv(t, "http://127.0.0.1:1")
	expired := issue(t, "orders", newPrincipal(t, "reaped"), "fn", time.Now().Add(-time.Hour), time.Minute)

	r := runCLI(t, env.cli(), "reaper", "run", "--once")
	if r.code != 0 {
		t.Fatal(r)
	}
	var sum struct {
		Msg     string `json:"msg"`
		Revoked int    `json:"revoked"`
		Failed  int    `json:"failed"`
	}
	found := false
	for _, l := range lines(r.stdout) {
		if json.Unmarshal([]byte(l), &sum) == nil && sum.Msg == "reaper run" {
			found = true
			break
		}
	}
	if !found || sum.Revoked < 1 || sum.Failed != 0 {
		t.Fatalf("summary %+v: %v", sum, r)
	}
	if row := leaseRowOf(t, expired.ID); !row.revoked || roleExists(t, expired.Username) {
		t.Errorf("the expired lease was not reaped: %+v", row)
	}

	// On an interval until interrupted: one summary line per run.
	c := env.cli()
	var out, errb syncBuffer
	c.Stdout, c.Stderr = &out, &errb
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- c.Main(ctx, []string{"reaper", "run", "--every", "1s"}) }()
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(out.String(), `"msg":"reaper run"`) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 || strings.Count(out.String(), `"msg":"reaper run"`) < 2 {
			t.Errorf("exit %d:\n%s\n%s", code, out.String(), errb.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reaper run did not stop")
	}

	// Without configuration: one clear line.
	r = runCLI(t, cliWithEnv{}.cli(), "reaper", "run", "--once")
	if r.code != 1 || r.stderr != "ephemera: config: EPHEMERA_CONFIG is required (path of the YAML file)\n" {
		t.Errorf("no config: %v", r)
	}
}
