package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
	"github.com/ephemera-sh/ephemera/extension/internal/extapitest"
	"github.com/ephemera-sh/ephemera/extension/internal/localapitest"
	"github.com/ephemera-sh/ephemera/extension/localapi"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type harness struct {
	api    *extapitest.Server
	broker *brokertest.Broker
	env    map[string]string
	port   int
	logs   *observe.Buffer
	exit   chan int
}

func newHarness(t *testing.T) *harness {
	h := &harness{api: extapitest.Start(t), broker: brokertest.Start(t), port: freePort(t), logs: &observe.Buffer{}, exit: make(chan int, 1)}
	c := h.broker.Credentials()
	h.env = map[string]string{
		"AWS_LAMBDA_RUNTIME_API":   h.api.Addr(),
		"EPHEMERA_BROKER_URL":      h.broker.URL(),
		"EPHEMERA_AUDIENCE":        brokertest.Audience,
		"EPHEMERA_CREDENTIALS":     "orders=orders/readonly:15m",
		"EPHEMERA_PORT":            strconv.Itoa(h.port),
		"EPHEMERA_INIT_TIMEOUT":    "5s",
		"AWS_ACCESS_KEY_ID":        c.AccessKeyID,
		"AWS_SECRET_ACCESS_KEY":    c.SecretAccessKey,
		"AWS_SESSION_TOKEN":        c.SessionToken,
		"AWS_REGION":               brokertest.Region,
		"AWS_LAMBDA_FUNCTION_NAME": "orders-fn",
	}
	return h
}

func (h *harness) start(ctx context.Context) {
	go func() {
		h.exit <- run(ctx, []string{"/opt/extensions/ephemera"}, func(k string) string { return h.env[k] }, h.logs)
	}()
}

func (h *harness) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-h.exit:
		return code
	case <-time.After(20 * time.Second):
		t.Fatalf("the extension did not exit; logs:\n%s", h.logs)
		return -1
	}
}

func (h *harness) read(t *testing.T, name string) (int, map[string]any) {
	t.Helper()
	return localapitest.Get(t, h.port, "/v1/credentials/"+name, localapi.HeaderToken, h.env["AWS_SESSION_TOKEN"])
}

func (h *harness) checkLogs(t *testing.T) {
	t.Helper()
	h.broker.CheckLogs(t, h.logs.String())
}

// configInvalid starts the extension and expects exit 1 after exactly one
// Extension.ConfigInvalid report whose message contains want.
func (h *harness) configInvalid(t *testing.T, want string) {
	t.Helper()
	h.start(context.Background())
	if code := h.wait(t); code != 1 {
		t.Fatalf("exit %d", code)
	}
	reps := h.api.Reports()
	if len(reps) != 1 || reps[0].ErrorType != "Extension.ConfigInvalid" || !strings.Contains(reps[0].Message, want) {
		t.Fatalf("reports %+v", reps)
	}
}

func TestConfigInvalid(t *testing.T) {
	h := newHarness(t)
	delete(h.env, "EPHEMERA_AUDIENCE")
	h.env["EPHEMERA_PORT"] = "http"
	h.start(context.Background())
	if code := h.wait(t); code != 1 {
		t.Fatalf("exit %d", code)
	}
	reps := h.api.Reports()
	if len(reps) != 1 || reps[0].Path != "/init/error" || reps[0].ErrorType != "Extension.ConfigInvalid" ||
		!strings.Contains(reps[0].Message, "EPHEMERA_AUDIENCE") || !strings.Contains(reps[0].Message, "EPHEMERA_PORT") {
		t.Fatalf("reports %+v", reps)
	}
	if _, _, n := h.api.Registration(); n != 1 {
		t.Fatal("the extension did not register before reporting")
	}
	h.checkLogs(t)
}

// The wiring end to end: the environment's credential is issued at INIT, served on
// EPHEMERA_PORT, and revoked at SHUTDOWN (exit 0). The lifecycle's own cases are in
// package extension/lifecycle.
func TestRunServesAndRevokes(t *testing.T) {
	h := newHarness(t)
	h.start(context.Background())
	if !h.api.WaitNext(10 * time.Second) {
		t.Fatalf("no /event/next; logs:\n%s", h.logs)
	}
	if status, body := h.read(t, "orders"); status != 200 || body["username"] == "" {
		t.Fatalf("read: %d %v", status, body)
	}
	h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
	if code := h.wait(t); code != 0 {
		t.Fatalf("exit %d; logs:\n%s", code, h.logs)
	}
	if n, r := h.broker.Count("issue"), h.broker.Count("revoke"); n != 1 || r != 1 {
		t.Fatalf("%d issues, %d revocations", n, r)
	}
	h.checkLogs(t)
}

// A broker URL that is plain http to a host other than a loopback address is a
// configuration error, reported before anything is sent.
func TestInsecureBrokerURL(t *testing.T) {
	h := newHarness(t)
	h.env["EPHEMERA_BROKER_URL"] = "http://broker.example.com"
	h.configInvalid(t, "must be https")
	if n := len(h.broker.Calls()); n != 0 {
		t.Fatalf("%d calls reached a broker", n)
	}
}

// TestLogLevel: EPHEMERA_LOG_LEVEL sets the extension's level. Local
// requests are logged at debug only; at warn not even INIT's info lines are.
func TestLogLevel(t *testing.T) {
	for _, tc := range []struct {
		level                  string
		wantRequest, wantServe bool
	}{
		{"", false, true},
		{"debug", true, true},
		{"warn", false, false},
	} {
		t.Run("level="+tc.level, func(t *testing.T) {
			h := newHarness(t)
			if tc.level != "" {
				h.env["EPHEMERA_LOG_LEVEL"] = tc.level
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			h.start(ctx)
			if !h.api.WaitNext(10 * time.Second) {
				t.Fatalf("no /event/next; logs:\n%s", h.logs)
			}
			if status, _ := h.read(t, "orders"); status != 200 {
				t.Fatalf("read: %d", status)
			}
			h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
			if code := h.wait(t); code != 0 {
				t.Fatalf("exit %d; logs:\n%s", code, h.logs)
			}
			logs := h.logs.String()
			if got := strings.Contains(logs, `"msg":"local request"`); got != tc.wantRequest {
				t.Errorf("local request logged: %v, want %v; logs:\n%s", got, tc.wantRequest, logs)
			}
			if got := strings.Contains(logs, `"msg":"serving"`); got != tc.wantServe {
				t.Errorf("INIT's serving line logged: %v, want %v; logs:\n%s", got, tc.wantServe, logs)
			}
			h.checkLogs(t)
		})
	}
}
