package lambdaemu_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
)

// fnResponse is what testdata/fn answers.
type fnResponse struct {
	Echo       json.RawMessage   `json:"echo"`
	RequestID  string            `json:"request_id"`
	ARN        string            `json:"arn"`
	DeadlineMS int64             `json:"deadline_ms"`
	NowMS      int64             `json:"now_ms"`
	TraceID    string            `json:"trace_id"`
	Env        map[string]string `json:"env"`
}

func invoke(t *testing.T, e *lambdaemu.Emulator, payload string) *lambdaemu.Result {
	t.Helper()
	res, err := e.Invoke(context.Background(), []byte(payload))
	if err != nil {
		t.Fatalf("Invoke(%s): %v", payload, err)
	}
	return res
}

func decode(t *testing.T, res *lambdaemu.Result) fnResponse {
	t.Helper()
	if res.ErrorType != "" {
		t.Fatalf("function error %s: %s", res.ErrorType, res.Payload)
	}
	var r fnResponse
	if err := json.Unmarshal(res.Payload, &r); err != nil {
		t.Fatalf("decoding %s: %v", res.Payload, err)
	}
	return r
}

func TestInvokeReachesRuntimeAndExtension(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)

	before := time.Now().UnixMilli()
	res := invoke(t, e, `{"echo":{"n":1}}`)
	r := decode(t, res)
	if string(r.Echo) != `{"n":1}` || r.RequestID != res.RequestID {
		t.Fatalf("response = %+v, want echo {\"n\":1} and request id %s", r, res.RequestID)
	}
	if want := "arn:aws:lambda:eu-west-1:123456789012:function:orders-api"; r.ARN != want {
		t.Errorf("ARN = %q, want %q", r.ARN, want)
	}
	if !strings.HasPrefix(r.TraceID, "Root=1-") || !strings.Contains(r.TraceID, ";Parent=") {
		t.Errorf("trace id = %q", r.TraceID)
	}
	// deadlineMs is absolute Unix milliseconds, now + Timeout (default 3s).
	if r.DeadlineMS <= r.NowMS || r.DeadlineMS < before+2500 || r.DeadlineMS > time.Now().UnixMilli()+3500 {
		t.Errorf("deadline %d not about 3s after %d (function's now %d)", r.DeadlineMS, before, r.NowMS)
	}
	if res.Duration <= 0 {
		t.Errorf("Duration = %v", res.Duration)
	}

	evs := extEvents(e.Logs(), "ok")
	if len(evs) != 1 {
		t.Fatalf("extension saw %d events, want 1: %v", len(evs), evs)
	}
	ev := evs[0]
	if ev["type"] != "INVOKE" || ev["request"] != res.RequestID || ev["arn"] != r.ARN || ev["trace"] != r.TraceID {
		t.Errorf("extension event = %v, want INVOKE %s %s %s", ev, res.RequestID, r.ARN, r.TraceID)
	}
	if ev["deadline_ms"] != strconv.FormatInt(r.DeadlineMS, 10) {
		t.Errorf("extension deadline %s, runtime deadline %d", ev["deadline_ms"], r.DeadlineMS)
	}
	if now, _ := strconv.ParseInt(ev["now_ms"], 10, 64); now >= r.DeadlineMS {
		t.Errorf("extension got deadline %d at %d: not in the future", r.DeadlineMS, now)
	}
	if ev["eventid"] == "" {
		t.Error("no Lambda-Extension-Event-Identifier")
	}
	if !strings.Contains(e.Logs(), `"functionName":"orders-api"`) || !strings.Contains(e.Logs(), `"functionVersion":"$LATEST"`) ||
		!strings.Contains(e.Logs(), `"handler":"bootstrap"`) || !strings.Contains(e.Logs(), `"accountId":"123456789012"`) {
		t.Errorf("register response not as documented:\n%s", e.Logs())
	}

	infos := e.Extensions()
	if len(infos) != 1 || infos[0].Name != "ok" || len(infos[0].ID) != 36 || !slices.Equal(infos[0].Events, []string{"INVOKE", "SHUTDOWN"}) {
		t.Errorf("Extensions() = %+v", infos)
	}
	events := e.Events()
	for _, want := range []string{"invoke " + res.RequestID, "runtime event " + res.RequestID,
		"extension event ok INVOKE " + res.RequestID, "runtime response " + res.RequestID, "invoke done " + res.RequestID} {
		if indexOf(events, want) < 0 {
			t.Errorf("no event %q", want)
		}
	}

	// A second invocation on the same sandbox.
	res2 := invoke(t, e, `{"echo":2}`)
	if r2 := decode(t, res2); string(r2.Echo) != "2" || res2.RequestID == res.RequestID {
		t.Errorf("second invoke: %+v", r2)
	}
}

func TestFunctionErrorType(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)
	res := invoke(t, e, `{"fail":"boom"}`)
	if res.ErrorType != "FunctionError" {
		t.Fatalf("ErrorType = %q, want FunctionError (payload %s)", res.ErrorType, res.Payload)
	}
	var body struct{ ErrorMessage, ErrorType string }
	if err := json.Unmarshal(res.Payload, &body); err != nil || body.ErrorMessage != "boom" {
		t.Errorf("payload = %s (%v)", res.Payload, err)
	}
	// The sandbox is reused after a function error.
	decode(t, invoke(t, e, `{"echo":1}`))
	if n := strings.Count(strings.Join(e.Events(), "\n"), "init done"); n != 1 {
		t.Errorf("INIT ran %d times, want 1", n)
	}
}

func TestInitWaitsForEveryExtensionNext(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok", "sleepy") // sleepy sleeps 1s between register and next
	begin := time.Now()
	e := start(t, cfg)
	if d := time.Since(begin); d < 900*time.Millisecond {
		t.Errorf("Start returned after %v, before the sleepy extension called next", d)
	}
	events := e.Events()
	rtNext, sleepyNext, done := indexOf(events, "runtime next"), indexOf(events, "extension next sleepy"), indexOf(events, "init done")
	if rtNext < 0 || sleepyNext < 0 || done < 0 || !(rtNext < sleepyNext && sleepyNext < done) {
		t.Errorf("want runtime next (%d) < extension next sleepy (%d) < init done (%d)", rtNext, sleepyNext, done)
	}
	// Extensions register before the runtime starts.
	if reg, rt := indexOf(events, "register sleepy"), indexOf(events, "start runtime"); reg < 0 || rt < reg {
		t.Errorf("runtime started (%d) before sleepy registered (%d)", rt, reg)
	}
}

func TestInitTimeout(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok", "nonext")
	cfg.InitTimeout = time.Second
	begin := time.Now()
	e, err := lambdaemu.Start(context.Background(), cfg)
	if err == nil {
		e.Close()
		t.Fatal("Start succeeded with an extension that never calls next")
	}
	var ie *lambdaemu.InitError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want *InitError", err)
	}
	if ie.ErrorType != lambdaemu.ErrorTypeExtensionInitTimeout || ie.Extension != "nonext" {
		t.Errorf("InitError = %+v", ie)
	}
	if d := time.Since(begin); d < 900*time.Millisecond || d > 10*time.Second {
		t.Errorf("INIT failed after %v, want about 1s", d)
	}
}

func TestInitErrorFromExtension(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "bad", "ok")
	e, err := lambdaemu.Start(context.Background(), cfg)
	if err == nil {
		e.Close()
		t.Fatal("Start succeeded despite init/error")
	}
	var ie *lambdaemu.InitError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want *InitError", err)
	}
	if ie.ErrorType != "Extension.ConfigInvalid" || ie.Message != "EPHEMERA_BROKER_URL is not set" || ie.Extension != "bad" {
		t.Errorf("InitError = %+v", ie)
	}
}

func TestInitErrorFromRuntime(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	cfg.Env["FN_INIT_ERROR"] = "no handler configured"
	_, err := lambdaemu.Start(context.Background(), cfg)
	var ie *lambdaemu.InitError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want *InitError", err)
	}
	want := lambdaemu.InitError{Phase: lambdaemu.PhaseRuntimeInit, ErrorType: "Runtime.ConfigError", Message: "no handler configured"}
	if *ie != want {
		t.Errorf("InitError = %+v, want %+v", *ie, want)
	}
}

func TestWrongExtensionNameFailsInit(t *testing.T) {
	t.Parallel()
	cfg, out := testConfig(t, "wrongname")
	_, err := lambdaemu.Start(context.Background(), cfg)
	var ie *lambdaemu.InitError
	if !errors.As(err, &ie) || ie.Extension != "wrongname" || ie.ErrorType != lambdaemu.ErrorTypeExtensionCrash {
		t.Fatalf("err = %v, want an Extension.Crash InitError for wrongname", err)
	}
	if !strings.Contains(out.String(), "register failed status=403") || !strings.Contains(out.String(), "Extension.InvalidExtensionName") {
		t.Errorf("register with a wrong name not refused with 403 Extension.InvalidExtensionName")
	}
}

// apiCall makes one request to the emulator's API and returns the status
// and the errorType of the body.
func apiCall(t *testing.T, e *lambdaemu.Emulator, method, path string, hdr map[string]string, body string) (int, string) {
	t.Helper()
	status, typ, _ := apiCallBody(t, e, method, path, hdr, body)
	return status, typ
}

// apiCallBody is apiCall that also returns the response body.
func apiCallBody(t *testing.T, e *lambdaemu.Emulator, method, path string, hdr map[string]string, body string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.RuntimeAPI()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var eb struct{ ErrorType string }
	_ = json.Unmarshal(b, &eb)
	return res.StatusCode, eb.ErrorType, string(b)
}

func TestAPIRejections(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)
	unknownID := "0b1c2d3e-4f50-4617-8899-aabbccddeeff"
	tests := []struct {
		name         string
		method, path string
		hdr          map[string]string
		body         string
		status       int
		errorType    string
	}{
		{"register after INIT", "POST", "/2020-01-01/extension/register",
			map[string]string{"Lambda-Extension-Name": "ok"}, `{"events":["INVOKE"]}`, 403, "Extension.RegistrationClosed"},
		{"register of a newcomer after INIT", "POST", "/2020-01-01/extension/register",
			map[string]string{"Lambda-Extension-Name": "late"}, `{"events":["INVOKE"]}`, 403, "Extension.RegistrationClosed"},
		{"register without a name", "POST", "/2020-01-01/extension/register",
			nil, `{"events":["INVOKE"]}`, 403, "Extension.InvalidExtensionName"},
		{"register for an unknown event", "POST", "/2020-01-01/extension/register",
			map[string]string{"Lambda-Extension-Name": "ok"}, `{"events":["INVOKE","BOGUS"]}`, 400, "Extension.InvalidEventType"},
		{"register with a malformed body", "POST", "/2020-01-01/extension/register",
			map[string]string{"Lambda-Extension-Name": "ok"}, `{"events":`, 400, "InvalidRequestFormat"},
		{"next without identifier", "GET", "/2020-01-01/extension/event/next", nil, "", 403, "Extension.MissingExtensionIdentifier"},
		{"next with a malformed identifier", "GET", "/2020-01-01/extension/event/next",
			map[string]string{"Lambda-Extension-Identifier": "nope"}, "", 403, "Extension.InvalidExtensionIdentifier"},
		{"next with an unknown identifier", "GET", "/2020-01-01/extension/event/next",
			map[string]string{"Lambda-Extension-Identifier": unknownID}, "", 403, "Extension.UnknownExtensionIdentifier"},
		{"init/error with an unknown identifier", "POST", "/2020-01-01/extension/init/error",
			map[string]string{"Lambda-Extension-Identifier": unknownID, "Lambda-Extension-Function-Error-Type": "Extension.X"}, "", 403, "Extension.UnknownExtensionIdentifier"},
		{"response for an unknown request", "POST", "/2018-06-01/runtime/invocation/" + unknownID + "/response",
			nil, `{}`, 400, "InvalidRequestID"},
		{"error for an unknown request", "POST", "/2018-06-01/runtime/invocation/" + unknownID + "/error",
			nil, `{}`, 400, "InvalidRequestID"},
		{"runtime init/error after INIT", "POST", "/2018-06-01/runtime/init/error",
			map[string]string{"Lambda-Runtime-Function-Error-Type": "Runtime.X"}, `{}`, 403, "InvalidStateTransition"},
	}
	for _, tc := range tests {
		status, typ := apiCall(t, e, tc.method, tc.path, tc.hdr, tc.body)
		if status != tc.status || typ != tc.errorType {
			t.Errorf("%s: got %d %s, want %d %s", tc.name, status, typ, tc.status, tc.errorType)
		}
	}
	// init/error after INIT from a registered extension.
	id := e.Extensions()[0].ID
	status, typ := apiCall(t, e, "POST", "/2020-01-01/extension/init/error",
		map[string]string{"Lambda-Extension-Identifier": id, "Lambda-Extension-Function-Error-Type": "Extension.Late"}, "")
	if status != 403 || typ != "Extension.InvalidExtensionState" {
		t.Errorf("late init/error: got %d %s", status, typ)
	}
	// The sandbox still works.
	decode(t, invoke(t, e, `{"echo":1}`))

	// exit/error is accepted with 202 {"status":"OK"}; after it no call of
	// that extension succeeds.
	hdr := map[string]string{"Lambda-Extension-Identifier": id, "Lambda-Extension-Function-Error-Type": "Extension.Fatal"}
	if status, _, body := apiCallBody(t, e, "POST", "/2020-01-01/extension/exit/error", hdr,
		`{"errorMessage":"giving up","errorType":"Extension.Fatal"}`); status != 202 || body != `{"status":"OK"}` {
		t.Errorf("exit/error: got %d %s, want 202 {\"status\":\"OK\"}", status, body)
	}
	if rep := e.Extensions()[0].ExitError; rep == nil || rep.ErrorType != "Extension.Fatal" || rep.Message != "giving up" {
		t.Errorf("ExitError = %+v", rep)
	}
	if status, typ := apiCall(t, e, "GET", "/2020-01-01/extension/event/next", hdr, ""); status != 403 || typ != "Extension.InvalidExtensionState" {
		t.Errorf("next after exit/error: got %d %s", status, typ)
	}
}

func TestEnvironment(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)
	common := map[string]string{
		"AWS_LAMBDA_RUNTIME_API":          e.RuntimeAPI(),
		"AWS_LAMBDA_FUNCTION_NAME":        "orders-api",
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
		"AWS_REGION":                      "eu-west-1",
		"AWS_DEFAULT_REGION":              "eu-west-1",
		"AWS_ACCESS_KEY_ID":               "ASIATESTACCESSKEY",
		"AWS_SECRET_ACCESS_KEY":           "test-secret-key",
		"AWS_SESSION_TOKEN":               "test-session-token",
		"TZ":                              ":UTC",
		"EPHEMERA_BROKER_URL":             "http://127.0.0.1:1",
	}
	runtimeOnly := map[string]string{
		"_HANDLER":                  "bootstrap",
		"LAMBDA_TASK_ROOT":          strings.TrimSuffix(fnBin, "/fn"),
		"AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/orders-api",
	}
	var keys []string
	for k := range common {
		keys = append(keys, k)
	}
	for k := range runtimeOnly {
		keys = append(keys, k)
	}
	keys = append(keys, "AWS_LAMBDA_LOG_STREAM_NAME", leakVar)
	payload, _ := json.Marshal(map[string][]string{"env": keys})
	r := decode(t, invoke(t, e, string(payload)))

	for k, v := range common {
		if r.Env[k] != v {
			t.Errorf("runtime: %s = %q, want %q", k, r.Env[k], v)
		}
	}
	for k, v := range runtimeOnly {
		if r.Env[k] != v {
			t.Errorf("runtime: %s = %q, want %q", k, r.Env[k], v)
		}
	}
	if s := r.Env["AWS_LAMBDA_LOG_STREAM_NAME"]; !strings.Contains(s, "/[$LATEST]") {
		t.Errorf("runtime: AWS_LAMBDA_LOG_STREAM_NAME = %q", s)
	}
	if _, ok := r.Env[leakVar]; ok {
		t.Errorf("runtime inherited %s from the parent", leakVar)
	}

	// The extension logged its environment ("env K=V" lines).
	extEnv := map[string]string{}
	for _, line := range strings.Split(e.Logs(), "\n") {
		if kv, ok := strings.CutPrefix(line, "[ok] env "); ok {
			k, v, _ := strings.Cut(kv, "=")
			extEnv[k] = v
		}
	}
	for k, v := range common {
		if extEnv[k] != v {
			t.Errorf("extension: %s = %q, want %q", k, extEnv[k], v)
		}
	}
	// Variables "specific to the runtime process" are not given to
	// extensions (Lambda Extensions API documentation).
	for k := range runtimeOnly {
		if _, ok := extEnv[k]; ok {
			t.Errorf("extension has runtime-only variable %s", k)
		}
	}
	if _, ok := extEnv[leakVar]; ok {
		t.Errorf("extension inherited %s from the parent", leakVar)
	}
}

// procStates returns the /proc state letter of every child.
func procStates(t *testing.T, e *lambdaemu.Emulator) map[string]byte {
	t.Helper()
	states := map[string]byte{}
	for name, pid := range e.PIDs() {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		i := bytes.LastIndexByte(b, ')')
		states[name] = b[i+2]
	}
	return states
}

func allInState(t *testing.T, e *lambdaemu.Emulator, stopped bool) func() bool {
	return func() bool {
		states := procStates(t, e)
		if len(states) != 2 { // runtime and ok
			t.Fatalf("PIDs() = %v, want runtime and ok", e.PIDs())
		}
		for _, s := range states {
			if (s == 'T') != stopped {
				return false
			}
		}
		return true
	}
}

func TestFreezeStopsProcesses(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("needs /proc")
	}
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)

	// Frozen after INIT: every child is stopped ('T').
	if !e.Frozen() || !allInState(t, e, true)() {
		t.Fatalf("after INIT: Frozen() = %v, states %q", e.Frozen(), procStates(t, e))
	}
	if err := e.Thaw(); err != nil {
		t.Fatal(err)
	}
	if e.Frozen() || !waitFor(2*time.Second, allInState(t, e, false)) {
		t.Fatalf("after Thaw: Frozen() = %v, states %q", e.Frozen(), procStates(t, e))
	}
	if err := e.Freeze(); err != nil {
		t.Fatal(err)
	}
	if !allInState(t, e, true)() { // Freeze returns once stopped
		t.Fatalf("after Freeze: states %q", procStates(t, e))
	}
	// Invoke thaws, and freezes again afterwards.
	decode(t, invoke(t, e, `{"echo":1}`))
	if !e.Frozen() || !allInState(t, e, true)() {
		t.Fatalf("after Invoke: Frozen() = %v, states %q", e.Frozen(), procStates(t, e))
	}
}

func TestSleepWhileFrozenJumpsTheClock(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)
	decode(t, invoke(t, e, `{"echo":1}`))
	const jump = 1200 * time.Millisecond
	time.Sleep(jump) // frozen: no child runs, but the wall clock does
	decode(t, invoke(t, e, `{"echo":2}`))

	evs := extEvents(e.Logs(), "ok")
	if len(evs) != 2 {
		t.Fatalf("extension saw %d events, want 2", len(evs))
	}
	gap, _ := strconv.ParseInt(evs[1]["gap_ms"], 10, 64)
	if gap < jump.Milliseconds() {
		t.Errorf("extension saw %dms between events, want at least %dms", gap, jump.Milliseconds())
	}
	for _, ev := range evs {
		now, _ := strconv.ParseInt(ev["now_ms"], 10, 64)
		dl, _ := strconv.ParseInt(ev["deadline_ms"], 10, 64)
		if dl <= now {
			t.Errorf("event %v: deadline not in the future", ev)
		}
	}
}

func TestShutdownReachesExtension(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)
	decode(t, invoke(t, e, `{"echo":1}`))

	before := time.Now().UnixMilli()
	res, err := e.Shutdown(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Exited)
	if !slices.Equal(res.Exited, []string{"ok", "runtime"}) || len(res.Killed) != 0 {
		t.Errorf("ShutdownResult = %+v, want ok and runtime exited, none killed", res)
	}
	evs := extEvents(e.Logs(), "ok")
	last := evs[len(evs)-1]
	dl, _ := strconv.ParseInt(last["deadline_ms"], 10, 64)
	if last["type"] != "SHUTDOWN" || last["reason"] != "spindown" || dl < before+1500 || dl > time.Now().UnixMilli()+2500 {
		t.Errorf("last event = %v, want SHUTDOWN spindown with deadline about 2s after %d", last, before)
	}
	if !strings.Contains(e.Logs(), "[ok] exiting") {
		t.Error("extension did not exit on SHUTDOWN")
	}
	if _, err := e.Invoke(context.Background(), []byte(`{}`)); !errors.Is(err, lambdaemu.ErrClosed) {
		t.Errorf("Invoke after Shutdown: %v, want ErrClosed", err)
	}
}

func TestShutdownKillsExtensionIgnoringIt(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "invokeonly", "ok", "slow")
	e := start(t, cfg)
	decode(t, invoke(t, e, `{"echo":1}`))

	res, err := e.Shutdown(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(res.Exited)
	slices.Sort(res.Killed)
	// invokeonly is not registered for SHUTDOWN, so it is killed at once;
	// slow ignores SHUTDOWN and is killed at the 2s deadline.
	if !slices.Equal(res.Exited, []string{"ok", "runtime"}) || !slices.Equal(res.Killed, []string{"invokeonly", "slow"}) {
		t.Errorf("ShutdownResult = %+v", res)
	}
	if res.Duration < 1500*time.Millisecond || res.Duration > 10*time.Second {
		t.Errorf("Duration = %v, want about 2s", res.Duration)
	}
	if !strings.Contains(e.Logs(), "[slow] ignoring SHUTDOWN") {
		t.Error("slow never saw SHUTDOWN")
	}
	if len(e.PIDs()) != 0 {
		t.Errorf("children left: %v", e.PIDs())
	}
}

func TestShutdownWithoutExtensionsKillsRuntime(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t)
	e := start(t, cfg)
	res, err := e.Shutdown(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Killed, []string{"runtime"}) || len(res.Exited) != 0 {
		t.Errorf("ShutdownResult = %+v, want the runtime killed at once", res)
	}
}

func TestTimeoutResetsSandbox(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	cfg.Timeout = 500 * time.Millisecond
	e := start(t, cfg)
	res := invoke(t, e, `{"sleep_ms":3000}`)
	if res.ErrorType != lambdaemu.ErrorTypeTimedOut || !strings.Contains(string(res.Payload), "Task timed out after 0.50 seconds") {
		t.Fatalf("Result = %s %s, want Sandbox.Timedout", res.ErrorType, res.Payload)
	}
	evs := extEvents(e.Logs(), "ok")
	if last := evs[len(evs)-1]; last["type"] != "SHUTDOWN" || last["reason"] != "timeout" {
		t.Errorf("extension's last event = %v, want SHUTDOWN timeout", last)
	}
	// The next invocation runs INIT again.
	decode(t, invoke(t, e, `{"echo":1}`))
	if n := strings.Count(strings.Join(e.Events(), "\n"), "init done"); n != 2 {
		t.Errorf("INIT ran %d times, want 2", n)
	}
}

func TestRuntimeCrash(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)
	res := invoke(t, e, `{"exit":true}`)
	if res.ErrorType != lambdaemu.ErrorTypeRuntimeExit {
		t.Fatalf("Result = %s %s, want Runtime.ExitError", res.ErrorType, res.Payload)
	}
	decode(t, invoke(t, e, `{"echo":1}`))
}

func TestInternalExtension(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t)
	cfg.Env["FN_SIGTERM"] = "1" // lambda.WithEnableSIGTERM registers "GoLangEnableSIGTERM"
	cfg.ShutdownTimeout = time.Second
	e := start(t, cfg)
	infos := e.Extensions()
	if len(infos) != 1 || infos[0].Name != "GoLangEnableSIGTERM" || !infos[0].Internal || len(infos[0].Events) != 0 {
		t.Fatalf("Extensions() = %+v", infos)
	}
	decode(t, invoke(t, e, `{"echo":1}`))
	res, err := e.Shutdown(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// With an extension registered the runtime gets SIGTERM first; this
	// one runs its handler but does not exit, so it is killed.
	if !strings.Contains(e.Logs(), "[runtime] fn: SIGTERM") {
		t.Error("runtime did not get SIGTERM")
	}
	if !slices.Equal(res.Killed, []string{"runtime"}) {
		t.Errorf("ShutdownResult = %+v", res)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	t.Parallel()
	cfg, _ := testConfig(t, "ok")
	e := start(t, cfg)
	pids := e.PIDs()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	for name, pid := range pids {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			t.Errorf("%s (pid %d) still exists after Close", name, pid)
		}
	}
	if err := e.Freeze(); !errors.Is(err, lambdaemu.ErrClosed) {
		t.Errorf("Freeze after Close: %v", err)
	}
}
