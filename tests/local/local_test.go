package local

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/internal/cli"
	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
	interpreters "github.com/ephemera-sh/ephemera/tests/runtimes"
)

// runtimeSpec is one demo function and what it needs installed.
type runtimeSpec struct {
	name     string // subtest name
	dir      string // the function's folder, relative to this package
	function string // its logical id in local/env.json
	missing  func() string
}

var runtimes = []runtimeSpec{
	{name: "python", dir: "../../functions/demo-python", function: "OrdersPython", missing: interpreters.PythonMissing},
	{name: "node", dir: "../../functions/demo-node", function: "OrdersNode", missing: interpreters.NodeMissing},
}

// requireRuntime fails t, with the install hint, when rt is not installed.
func requireRuntime(t *testing.T, rt runtimeSpec) {
	t.Helper()
	if msg := rt.missing(); msg != "" {
		t.Fatalf("the %s runtime is not installed: %s", rt.name, msg)
	}
}

// answer is the demo function's API Gateway response, its body decoded.
type answer struct {
	Status      int
	CurrentUser string `json:"current_user"`
	Orders      []struct {
		ID   int    `json:"id"`
		Item string `json:"item"`
		Qty  int    `json:"qty"`
	} `json:"orders"`
	AWSARN string `json:"aws_arn"`
}

// decode parses the function's result (an API Gateway v2 response).
func decode(t *testing.T, payload []byte) answer {
	t.Helper()
	var resp struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
	}
	if err := json.Unmarshal(payload, &resp); err != nil {
		t.Fatalf("the result is not an API Gateway response: %v: %s", err, payload)
	}
	a := answer{Status: resp.StatusCode}
	if err := json.Unmarshal([]byte(resp.Body), &a); err != nil {
		t.Fatalf("the body is not JSON: %v: %s", err, resp.Body)
	}
	return a
}

// checkOrders asserts that a is the orders, read by an ephemeral user, and that the AWS
// identity the function saw is the AWS profile's role (a session the broker assumed for
// function), not its execution role.
func checkOrders(t *testing.T, a answer, function string) {
	t.Helper()
	if a.Status != http.StatusOK || !strings.HasPrefix(a.CurrentUser, "eph_readonly_") {
		t.Fatalf("answer %+v, want 200 from an eph_readonly_ user", a)
	}
	var items []string
	for _, o := range a.Orders {
		items = append(items, fmt.Sprintf("%d:%s:%d", o.ID, o.Item, o.Qty))
	}
	if got, want := strings.Join(items, ","), "1:espresso beans:3,2:oat milk:12,3:paper filters:200"; got != want {
		t.Fatalf("orders %s, want %s", got, want)
	}
	if want := "arn:aws:sts::123456789012:assumed-role/reports-read/" + function; a.AWSARN != want {
		t.Fatalf("the function's AWS identity is %q, want the profile's assumed role %q", a.AWSARN, want)
	}
}

// TestInvokeDemoFunctions: `ephemera local invoke` with each demo function's committed
// env.json and event prints the function's result on stdout — the orders, read as an
// ephemeral user, and the AWS profile's assumed role as the function's AWS identity — and
// its logs on stderr: the function's invocation line, the extension's issue and, at
// SHUTDOWN, its revocation of the lease. It exits 0.
func TestInvokeDemoFunctions(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			requireRuntime(t, rt)
			var stdout, stderr observe.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			code := cli.Main(ctx, []string{"local", "invoke",
				"--env-vars", rt.dir + "/local/env.json", "--event", rt.dir + "/local/event.json", rt.dir}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d\n--- stdout\n%s--- stderr\n%s", code, stdout.String(), stderr.String())
			}
			checkOrders(t, decode(t, []byte(stdout.String())), rt.function)
			logs := stderr.String()
			for _, want := range []string{
				"[local] function " + rt.function + ", execution role arn:aws:iam::123456789012:role/orders-api-local",
				`"msg":"credential issued"`, `"msg":"lease revoked"`,
			} {
				if !strings.Contains(logs, want) {
					t.Errorf("stderr lacks %s:\n%s", want, logs)
				}
			}
			if !regexp.MustCompile(`\[runtime\] \{"msg": ?"invocation"`).MatchString(logs) {
				t.Errorf("stderr lacks the function's invocation line:\n%s", logs)
			}
			if strings.Contains(stdout.String(), "[runtime]") || strings.Contains(stdout.String(), "[ephemera]") {
				t.Errorf("logs on stdout:\n%s", stdout.String())
			}
		})
	}
}

// TestStartServesTheInvokeAPI: `ephemera local start` keeps the function warm behind the
// Lambda Invoke API; two invocations through it answer the orders from the same ephemeral
// user (one sandbox, one credential, one connection); an unknown function is a 404
// ResourceNotFoundException; cancelling (Ctrl-C) stops the API and everything else, exit 0.
func TestStartServesTheInvokeAPI(t *testing.T) {
	rt := runtimes[1]
	requireRuntime(t, rt)
	var stdout, stderr observe.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() {
		done <- cli.Main(ctx, []string{"local", "start", "--listen", "127.0.0.1:0",
			"--env-vars", rt.dir + "/local/env.json", rt.dir}, &stdout, &stderr)
	}()
	re := regexp.MustCompile(`invoke API  (http://127\.0\.0\.1:\d+)`)
	var base string
	for deadline := time.Now().Add(3 * time.Minute); base == ""; time.Sleep(50 * time.Millisecond) {
		if m := re.FindStringSubmatch(stdout.String()); m != nil {
			base = m[1]
		}
		select {
		case code := <-done:
			t.Fatalf("local start ended (exit %d) before serving:\n%s\n%s", code, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("local start printed no invoke API within 3 minutes:\n%s\n%s", stdout.String(), stderr.String())
		}
	}
	event, err := os.ReadFile(rt.dir + "/local/event.json")
	if err != nil {
		t.Fatal(err)
	}
	url := base + "/2015-03-31/functions/" + rt.function + "/invocations"
	var users []string
	for i := 1; i <= 2; i++ {
		status, body, hdr := post(t, url, event)
		if status != http.StatusOK || hdr.Get("X-Amz-Function-Error") != "" {
			t.Fatalf("invocation %d: %d %s\n%s", i, status, body, stderr.String())
		}
		a := decode(t, body)
		checkOrders(t, a, rt.function)
		users = append(users, a.CurrentUser)
	}
	if users[0] != users[1] {
		t.Errorf("the warm sandbox changed users between invocations: %v", users)
	}
	status, body, hdr := post(t, base+"/2015-03-31/functions/NoSuchFunction/invocations", event)
	if status != http.StatusNotFound || hdr.Get("X-Amzn-ErrorType") != "ResourceNotFoundException" {
		t.Errorf("an unknown function: %d %s %v", status, body, hdr)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after Ctrl-C:\n%s", code, stderr.String())
		}
	case <-time.After(time.Minute):
		t.Fatal("local start did not stop within a minute of Ctrl-C")
	}
	if !strings.Contains(stderr.String(), `"msg":"lease revoked"`) {
		t.Errorf("the extension revoked no lease at SHUTDOWN:\n%s", stderr.String())
	}
	if _, err := http.Post(url, "application/json", bytes.NewReader(event)); err == nil {
		t.Error("the invoke API still answers after Ctrl-C")
	}
}

func post(t *testing.T, url string, body []byte) (int, []byte, http.Header) {
	t.Helper()
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw, resp.Header
}

// TestInvokeReportsAFailingInit: a command whose process exits during INIT (here through
// the wrapper bootstrap that runs a command in the current directory) makes `local invoke`
// exit 1 with one line naming the function and Lambda's error type; nothing is printed on
// stdout.
func TestInvokeReportsAFailingInit(t *testing.T) {
	var stdout, stderr observe.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := cli.Main(ctx, []string{"local", "invoke", "--function", "broken-fn", "--", "sh", "-c", "echo 'no runtime here' >&2; exit 3"}, &stdout, &stderr)
	errText := stderr.String()
	if code != 1 || stdout.String() != "" {
		t.Fatalf("exit %d, stdout %q\n%s", code, stdout.String(), errText)
	}
	if !strings.Contains(errText, "[runtime] no runtime here") ||
		!regexp.MustCompile(`(?m)^ephemera: invoke: INIT of broken-fn: .*Runtime\.ExitError`).MatchString(errText) {
		t.Fatalf("stderr:\n%s", errText)
	}
}

// TestLambdaBinariesLinkNoEmulator: the CLI links the emulators of sam/local, the Lambda
// functions and the extension must not. Only the programs count: test doubles under
// extension/internal (brokertest) may use the emulators.
func TestLambdaBinariesLinkNoEmulator(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "lambda.norpc", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`,
		"../../functions/...", "../../extension/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	mains := strings.Fields(string(out))
	if len(mains) < 4 { // functions/broker, reaper, demo and the extension at least
		t.Fatalf("go list found the programs %v", mains)
	}
	out, err = exec.Command("go", append([]string{"list", "-tags", "lambda.norpc", "-deps"}, mains...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 20 {
		t.Fatalf("go list -deps listed %d packages", len(deps))
	}
	for _, p := range deps {
		if strings.Contains(p, "/sam/local") || strings.HasSuffix(p, "/internal/cli") {
			t.Errorf("a Lambda binary (%v) links %s", mains, p)
		}
	}
}

// TestInvokeGoExecutable: a Go function built with -tags lambda.norpc runs as an executable
// (the README's Go example): its name is the file's base name, and it reads the orders as
// an ephemeral user with the default EPHEMERA_CREDENTIALS (no env.json).
func TestInvokeGoExecutable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "orders-go")
	if err := gobuild.To(ctx, bin, gobuild.ModulePath+"/functions/demo", gobuild.Options{Tags: []string{gobuild.NoRPC}}); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr observe.Buffer
	code := cli.Main(ctx, []string{"local", "invoke", "--event", runtimes[0].dir + "/local/event.json", bin}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n--- stdout\n%s--- stderr\n%s", code, stdout.String(), stderr.String())
	}
	a := decode(t, []byte(stdout.String()))
	if a.Status != http.StatusOK || !strings.HasPrefix(a.CurrentUser, "eph_readonly_") || len(a.Orders) != 3 {
		t.Fatalf("answer %+v", a)
	}
	if !strings.Contains(stderr.String(), "[local] function orders-go, execution role arn:aws:iam::123456789012:role/orders-api-local") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}

// TestInvokeCommand: a function given as a command (here node and the demo's runtime loop)
// runs in the current directory, its LAMBDA_TASK_ROOT, with the environment of env.json:
// the help's example, run from functions/demo-node.
func TestInvokeCommand(t *testing.T) {
	rt := runtimes[1]
	requireRuntime(t, rt)
	t.Chdir(rt.dir)
	var stdout, stderr observe.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	code := cli.Main(ctx, []string{"local", "invoke", "--env-vars", "local/env.json", "--event", "local/event.json",
		"--", "node", "runtime.js", "handler.handler"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n--- stdout\n%s--- stderr\n%s", code, stdout.String(), stderr.String())
	}
	checkOrders(t, decode(t, []byte(stdout.String())), rt.function)
}
