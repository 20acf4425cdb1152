package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
)

// withProbe runs the probe function instead of the demo: it reads the
// credential during its init like the demo, but survives a failed read, so
// that an INIT failure can only come from the extension.
func withProbe(c *lambdaemu.Config) { c.Bootstrap = probeBootstrap }

// probeAnswer is the probe function's answer.
type probeAnswer struct {
	OK          bool   `json:"ok"`
	Status      int    `json:"status"`
	Code        string `json:"code"`
	Error       string `json:"error"`
	CurrentUser string `json:"current_user"`
	InitRead    string `json:"init_read"`
}

func (s *sandbox) invokeProbe(t *testing.T) probeAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := s.emu.Invoke(ctx, []byte(`{}`))
	if err != nil {
		t.Fatalf("invoke: %v", err)
	}
	var a probeAnswer
	if res.ErrorType != "" || json.Unmarshal(res.Payload, &a) != nil {
		t.Fatalf("probe invocation failed: %s %s", res.ErrorType, res.Payload)
	}
	return a
}

// TestBrokerDownAtInitFails: with EPHEMERA_ON_INIT_FAILURE=fail and a broker
// that refuses connections, the extension reports init/error
// Extension.BrokerUnavailable and INIT fails — with the probe function and
// with the demo function alike.
func TestBrokerDownAtInitFails(t *testing.T) {
	env := map[string]string{
		"EPHEMERA_BROKER_URL":      closedURL(t),
		"EPHEMERA_ON_INIT_FAILURE": "fail",
		"EPHEMERA_INIT_TIMEOUT":    "2s",
	}
	start := time.Now()
	sb, err := startSandbox(t, st.Workload("orders-api-down", "orders-down-fn"), env, withProbe)
	var ie *lambdaemu.InitError
	if !errors.As(err, &ie) {
		t.Fatalf("Start: %v, want an *lambdaemu.InitError\n%s", err, sb.out.String())
	}
	t.Logf("INIT failed after %v: %v", time.Since(start).Round(time.Millisecond), ie)
	if ie.ErrorType != "Extension.BrokerUnavailable" || ie.Extension != "ephemera" {
		t.Errorf("InitError %+v: want type Extension.BrokerUnavailable from extension ephemera\n%s", ie, sb.out.String())
	}

	// The demo function reads during its init too. The extension holds that
	// read (it is not answered 503 when the fetch fails) and reports
	// init/error before anything else, so the INIT error is always the
	// extension's, never the function's Runtime.ExitError.
	sb, err = startSandbox(t, st.Workload("orders-api-down", "orders-down-demo-fn"), env, nil)
	if !errors.As(err, &ie) {
		t.Fatalf("Start (demo): %v, want an *lambdaemu.InitError\n%s", err, sb.out.String())
	}
	if ie.ErrorType != "Extension.BrokerUnavailable" || ie.Extension != "ephemera" {
		t.Errorf("InitError with the demo function %+v: want type Extension.BrokerUnavailable from extension ephemera\n%s", ie, sb.out.String())
	}
	if out := sb.out.String(); strings.Contains(out, "demo did not start") {
		t.Errorf("the demo gave up during INIT:\n%s", out)
	}
}

// TestBrokerDownAtInitLazy: with EPHEMERA_ON_INIT_FAILURE=lazy and a broker
// whose connections are dropped, INIT completes; reads get 503 until the
// broker is reachable again, and then succeed.
func TestBrokerDownAtInitLazy(t *testing.T) {
	proxy := startProxy(t, proxyDrop)
	id := st.Workload("orders-api-lazy", "orders-lazy-fn")
	sb, err := startSandbox(t, id, map[string]string{
		"EPHEMERA_BROKER_URL":      proxy.URL,
		"EPHEMERA_ON_INIT_FAILURE": "lazy",
		"EPHEMERA_INIT_TIMEOUT":    "2s",
	}, withProbe)
	if err != nil {
		t.Fatalf("INIT failed in lazy mode: %v\n%s", err, sb.out.String())
	}

	a := sb.invokeProbe(t)
	if a.OK || a.Status != http.StatusServiceUnavailable {
		t.Errorf("first invocation with the broker down: %+v, want a 503", a)
	}
	if !strings.HasPrefix(a.InitRead, "503") {
		t.Errorf("the function's init read gave %q, want 503", a.InitRead)
	}
	// The local API says so too.
	if err := sb.emu.Thaw(); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	addr := fmt.Sprintf("127.0.0.1:%d", sb.port())
	status, body := localGet(t, hc, addr, "/v1/health", "", "")
	if status != http.StatusOK || !strings.Contains(string(body), `"ready":false`) {
		t.Errorf("health with the broker down: %d %s", status, body)
	}
	if status, body := localGet(t, hc, addr, "/v1/credentials/orders", id.SessionToken, ""); status != http.StatusServiceUnavailable {
		t.Errorf("read with the broker down: %d %s", status, body)
	}
	if err := sb.emu.Freeze(); err != nil {
		t.Fatal(err)
	}

	// The first invocation after the broker is back succeeds: the INVOKE
	// fetches the missing credential, and the function's read waits for that
	// fetch instead of answering 503 at once.
	proxy.mode.Store(proxyForward)
	back := time.Now()
	a = sb.invokeProbe(t)
	if !a.OK || !strings.HasPrefix(a.CurrentUser, "eph_") {
		t.Fatalf("first invocation after the broker came back: %+v, want a login as an eph_ user\n%s", a, sb.out.String())
	}
	t.Logf("the function's read succeeded at the first invocation, %v after the broker came back",
		time.Since(back).Round(time.Millisecond))

	// The demo function too: its INIT succeeds without a credential, an
	// invocation while the broker is down answers 503 (no crash), and the
	// first one after it is back reads the orders.
	demoProxy := startProxy(t, proxyDrop)
	demo, err := startSandbox(t, st.Workload("orders-api-lazy", "orders-lazy-demo-fn"), map[string]string{
		"EPHEMERA_BROKER_URL":      demoProxy.URL,
		"EPHEMERA_ON_INIT_FAILURE": "lazy",
		"EPHEMERA_INIT_TIMEOUT":    "2s",
	}, nil)
	if err != nil {
		t.Fatalf("INIT of the demo failed in lazy mode: %v\n%s", err, demo.out.String())
	}
	if d := demo.invokeDemo(t); d.ErrorType != "" || d.Status != http.StatusServiceUnavailable || d.Error != "credentials not ready" {
		t.Errorf("demo invocation with the broker down: %+v, want a 503 answer", d)
	}
	demoProxy.mode.Store(proxyForward)
	if d := demo.invokeDemo(t); !d.ok() {
		t.Fatalf("first demo invocation after the broker came back: %+v\n%s", d, demo.out.String())
	}
}

// TestBadConfiguration: a configuration error makes the extension report
// init/error Extension.ConfigInvalid with a message that names the
// variable.
func TestBadConfiguration(t *testing.T) {
	for _, tc := range []struct {
		name     string
		env      map[string]string
		variable string
	}{
		{"missing broker URL", map[string]string{"EPHEMERA_BROKER_URL": ""}, "EPHEMERA_BROKER_URL"},
		{"malformed credentials", map[string]string{"EPHEMERA_CREDENTIALS": "orders=orders"}, "EPHEMERA_CREDENTIALS"},
		{"malformed credential ttl", map[string]string{"EPHEMERA_CREDENTIALS": "orders=orders/readonly:soon"}, "EPHEMERA_CREDENTIALS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb, err := startSandbox(t, st.Workload("orders-api-badcfg", "orders-badcfg-fn"), tc.env, withProbe)
			var ie *lambdaemu.InitError
			if !errors.As(err, &ie) {
				t.Fatalf("Start: %v, want an *lambdaemu.InitError\n%s", err, sb.out.String())
			}
			if ie.ErrorType != "Extension.ConfigInvalid" || ie.Extension != "ephemera" || !strings.Contains(ie.Message, tc.variable) {
				t.Errorf("InitError %+v: want Extension.ConfigInvalid from ephemera naming %s", ie, tc.variable)
			}
		})
	}
}
