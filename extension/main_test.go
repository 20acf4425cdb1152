package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
	"github.com/ephemera-sh/ephemera/extension/internal/extapitest"
	"github.com/ephemera-sh/ephemera/extension/localapi"
)

// syncBuffer is a log sink safe for the extension's goroutines.
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
	logs   *syncBuffer
	exit   chan int
}

func newHarness(t *testing.T) *harness {
	h := &harness{api: extapitest.Start(t), broker: brokertest.Start(t), port: freePort(t), logs: &syncBuffer{}, exit: make(chan int, 1)}
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
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(h.port)+"/v1/credentials/"+name, nil)
	req.Header.Set(localapi.HeaderToken, h.env["AWS_SESSION_TOKEN"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func (h *harness) checkLogs(t *testing.T) {
	t.Helper()
	c := h.broker.Credentials()
	logs := h.logs.String()
	for _, secret := range []string{c.SecretAccessKey, c.SessionToken, "pw-", "password="} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret (%.8s…)", secret)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line != "" && !json.Valid([]byte(line)) {
			t.Errorf("log line is not JSON: %s", line)
		}
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t)
	h.start(context.Background())
	if !h.api.WaitNext(10 * time.Second) {
		t.Fatalf("no /event/next; logs:\n%s", h.logs)
	}
	if name, events, _ := h.api.Registration(); name != "ephemera" || strings.Join(events, ",") != "INVOKE,SHUTDOWN" {
		t.Fatalf("registered %q for %v", name, events)
	}
	status, body := h.read(t, "orders")
	if status != 200 || body["username"] == "" || !strings.Contains(body["dsn"].(string), "user='") {
		t.Fatalf("read: %d %v", status, body)
	}
	h.api.Invoke("req-1", time.Now().Add(3*time.Second))
	if !h.api.WaitNext(10 * time.Second) {
		t.Fatal("no /event/next after INVOKE")
	}
	h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
	if code := h.wait(t); code != 0 {
		t.Fatalf("exit %d; logs:\n%s", code, h.logs)
	}
	for _, l := range h.broker.Leases() {
		if !l.Revoked {
			t.Errorf("lease %s not revoked at SHUTDOWN", l.ID)
		}
	}
	if n := h.broker.Count("issue"); n != 1 {
		t.Errorf("%d issues", n)
	}
	if reps := h.api.Reports(); len(reps) != 0 {
		t.Errorf("error reports %+v", reps)
	}
	if _, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(h.port), 200*time.Millisecond); err == nil {
		t.Error("the local server still listens after SHUTDOWN")
	}
	h.checkLogs(t)
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

func TestBrokerUnavailableFailsInit(t *testing.T) {
	h := newHarness(t)
	h.env["EPHEMERA_INIT_TIMEOUT"] = "1s"
	h.broker.SetDown(true)
	h.start(context.Background())
	if code := h.wait(t); code != 1 {
		t.Fatalf("exit %d", code)
	}
	reps := h.api.Reports()
	if len(reps) != 1 || reps[0].ErrorType != "Extension.BrokerUnavailable" || !strings.Contains(reps[0].Message, `"orders"`) {
		t.Fatalf("reports %+v", reps)
	}
	h.checkLogs(t)
}

// In fail mode a read that waits for INIT is not answered when INIT fails: the extension
// reports init/error first, so that the function cannot exit on a 503 and fail INIT with
// Runtime.ExitError before the extension's report is in.
func TestFailModeReportsBeforeAnsweringReads(t *testing.T) {
	h := newHarness(t)
	h.env["EPHEMERA_INIT_TIMEOUT"] = "1s"
	h.broker.SetDown(true)
	release := h.broker.Hold()
	h.start(context.Background())
	for end := time.Now().Add(10 * time.Second); h.broker.InFlight() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("INIT never called the broker; logs:\n%s", h.logs)
		}
	}

	type outcome struct {
		status  int
		err     error
		reports int // error reports received when the read ended
	}
	done := make(chan outcome, 1)
	go func() {
		hc := &http.Client{Timeout: 15 * time.Second}
		req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(h.port)+"/v1/credentials/orders", nil)
		req.Header.Set(localapi.HeaderToken, h.env["AWS_SESSION_TOKEN"])
		resp, err := hc.Do(req)
		o := outcome{err: err, reports: len(h.api.Reports())}
		if err == nil {
			o.status = resp.StatusCode
			resp.Body.Close()
		}
		done <- o
	}()
	time.Sleep(50 * time.Millisecond) // the read waits for INIT
	release()                         // the broker answers 503: INIT fails

	if code := h.wait(t); code != 1 {
		t.Fatalf("exit %d", code)
	}
	reps := h.api.Reports()
	if len(reps) != 1 || reps[0].Path != "/init/error" || reps[0].ErrorType != "Extension.BrokerUnavailable" {
		t.Fatalf("reports %+v", reps)
	}
	o := <-done
	if o.reports == 0 {
		t.Fatalf("the read ended (status %d, %v) before init/error was reported", o.status, o.err)
	}
	if o.status != 0 {
		t.Errorf("the read waiting for INIT was answered %d; it must stay held until the extension exits", o.status)
	}
	h.checkLogs(t)
}

func TestLazyInitServes503ThenRecovers(t *testing.T) {
	h := newHarness(t)
	h.env["EPHEMERA_INIT_TIMEOUT"] = "1s"
	h.env["EPHEMERA_ON_INIT_FAILURE"] = "lazy"
	h.broker.SetDown(true)
	h.start(context.Background())
	if !h.api.WaitNext(15 * time.Second) {
		t.Fatalf("no /event/next; logs:\n%s", h.logs)
	}
	if status, body := h.read(t, "orders"); status != 503 {
		t.Fatalf("read while down: %d %v", status, body)
	}
	h.broker.SetDown(false)
	h.api.Invoke("req-1", time.Now().Add(3*time.Second)) // an INVOKE kicks the retry
	var status int
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if status, _ = h.read(t, "orders"); status == 200 {
			break
		}
	}
	if status != 200 {
		t.Fatalf("never recovered; logs:\n%s", h.logs)
	}
	h.api.Shutdown("spindown", time.Now().Add(2*time.Second))
	if code := h.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	h.checkLogs(t)
}

func TestSignalStops(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	h.start(ctx)
	if !h.api.WaitNext(10 * time.Second) {
		t.Fatalf("no /event/next; logs:\n%s", h.logs)
	}
	cancel()
	if code := h.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if n := h.broker.Count("revoke"); n != 1 {
		t.Fatalf("%d revocations", n)
	}
}
