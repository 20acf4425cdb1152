package runtimes

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// sandbox is one emulated Lambda execution environment running a demo function.
type sandbox struct {
	emu      *lambdaemu.Emulator
	id       stsserver.Identity // the execution role
	function string
	out      *observe.Buffer // everything the function and the extension printed
}

// startSandbox starts rt's demo function with the extension as a new workload whose
// execution role is orders-api-<rt>-<suffix>, with database credential spec (a value of
// EPHEMERA_CREDENTIALS for the name "orders") and the AWS profile. It fails t, with the
// install hint, when the runtime is missing; it never skips.
func startSandbox(t *testing.T, rt runtimeSpec, suffix, credentials string) *sandbox {
	t.Helper()
	if msg := rt.missing(); msg != "" {
		t.Fatalf("the %s runtime is not installed: %s", rt.name, msg)
	}
	bootstrap, err := filepath.Abs(filepath.Join(rt.dir, "bootstrap"))
	if err != nil {
		t.Fatal(err)
	}
	function := fmt.Sprintf("orders-%s-%s-fn", rt.name, suffix)
	sb := &sandbox{id: st.Workload(fmt.Sprintf("orders-api-%s-%s", rt.name, suffix), function), function: function, out: &observe.Buffer{}}
	env := map[string]string{
		"EPHEMERA_CREDENTIALS":      credentials,
		"EPHEMERA_AWS_PROFILES":     profileName + "=" + profile + ":15m",
		"EPHEMERA_INIT_TIMEOUT":     "20s",
		"EPHEMERA_DEMO_AWS_PROFILE": profileName,
		"AWS_ENDPOINT_URL_STS":      st.STS.URL(),
	}
	err = stack.RetryPort(env, func() error {
		cfg, err := st.LambdaConfig(sb.id, extDir, bootstrap, env)
		if err != nil {
			t.Fatal(err)
		}
		// Interpreters start slower than a Go binary, and two cores are shared.
		cfg.Output, cfg.Timeout, cfg.InitTimeout, cfg.ShutdownTimeout = sb.out, 30*time.Second, 60*time.Second, 5*time.Second
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		sb.emu, err = lambdaemu.Start(ctx, cfg)
		return err
	})
	if err != nil {
		t.Fatalf("INIT of the %s function failed: %v\n%s", rt.name, err, sb.out.String())
	}
	t.Cleanup(func() { _ = sb.emu.Close() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sandbox output of %s:\n%s", function, sb.out.String())
		}
	})
	return sb
}

// answer is the demo function's answer to GET /orders.
type answer struct {
	Status         int
	CurrentUser    string `json:"current_user"`
	Orders         []struct{ ID, Qty int }
	LeaseExpiresAt time.Time `json:"lease_expires_at"`
	AWSARN         string    `json:"aws_arn"`
	AWSAccessKeyID string    `json:"aws_access_key_id"`
	Error          string    `json:"error"`
}

func (a answer) ok() bool {
	return a.Status == http.StatusOK && len(a.Orders) == 3 && strings.HasPrefix(a.CurrentUser, "eph_")
}

const getOrders = `{"version":"2.0","routeKey":"GET /orders","rawPath":"/orders","requestContext":{"http":{"method":"GET","path":"/orders"}}}`

// invoke invokes the function once; a function error or a malformed answer fails t.
func (s *sandbox) invoke(t *testing.T) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	res, err := s.emu.Invoke(ctx, []byte(getOrders))
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	if res.ErrorType != "" {
		t.Fatalf("invoke: %s: %s", res.ErrorType, res.Payload)
	}
	var resp struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
	}
	if err := json.Unmarshal(res.Payload, &resp); err != nil {
		t.Fatalf("the answer is not an API Gateway response: %v: %s", err, res.Payload)
	}
	a := answer{Status: resp.StatusCode}
	if err := json.Unmarshal([]byte(resp.Body), &a); err != nil {
		t.Fatalf("the body is not JSON: %v: %s", err, resp.Body)
	}
	return a
}

// shutdown ends the sandbox and fails t if a secret is in what it, or the broker, printed.
func (s *sandbox) shutdown(t *testing.T) {
	t.Helper()
	if _, err := s.emu.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	logs := s.out.String()
	if !strings.Contains(logs, `"msg": "invocation"`) && !strings.Contains(logs, `"msg":"invocation"`) {
		t.Fatalf("the function logged no invocation line:\n%s", logs)
	}
	secrets := map[string]string{
		"the execution role's secret key":    s.id.SecretAccessKey,
		"the execution role's session token": s.id.SessionToken,
	}
	for i, pw := range rec.All() {
		secrets[fmt.Sprintf("issued password #%d", i+1)] = pw
	}
	for i, ses := range st.STS.Sessions() {
		secrets[fmt.Sprintf("AWS session #%d's secret key", i+1)] = ses.Identity.SecretAccessKey
		secrets[fmt.Sprintf("AWS session #%d's session token", i+1)] = ses.Identity.SessionToken
	}
	for _, leak := range observe.Leaks(secrets, map[string]string{
		"the sandbox's output": logs, "the broker's output": brokerOut.String(),
	}) {
		t.Error(leak)
	}
}

// credentialRE extracts the access key id from a SigV4 Authorization header.
var credentialRE = regexp.MustCompile(`Credential=([A-Z0-9]+)/`)

// callerKeys returns the access key ids that signed the GetCallerIdentity requests STS
// received from SDKs: every one except the extension's identity proofs, which the broker
// forwards (they carry X-Ephemera-Audience).
func callerKeys() []string {
	var keys []string
	for _, r := range st.STS.Requests() {
		if !strings.Contains(string(r.Body), "Action=GetCallerIdentity") || r.Header.Get("X-Ephemera-Audience") != "" {
			continue
		}
		if m := credentialRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			keys = append(keys, m[1])
		}
	}
	return keys
}

// sessionOf returns the AWS session STS minted with access key id key.
func sessionOf(key string) (stsserver.Session, bool) {
	for _, s := range st.STS.Sessions() {
		if s.Identity.AccessKeyID == key {
			return s, true
		}
	}
	return stsserver.Session{}, false
}
