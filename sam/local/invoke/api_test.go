package invoke

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
)

// fakeFunction answers Invoke with what the test set, and records the events.
type fakeFunction struct {
	res    *lambdaemu.Result
	err    error
	events []string
}

func (f *fakeFunction) Invoke(ctx context.Context, event []byte) (*lambdaemu.Result, error) {
	f.events = append(f.events, string(event))
	return f.res, f.err
}

// TestInvokeAPI: the Invoke API answers the function's result with 200; a function error,
// and a failed INIT, with 200, X-Amz-Function-Error and the error document, as Lambda
// does; the function is found by name or ARN; an empty body is the event {}; an unknown
// function, path, method or invocation type, and an event that is not JSON, are refused
// with the Lambda API's error types before the function runs.
func TestInvokeAPI(t *testing.T) {
	fn := &fakeFunction{}
	var logs strings.Builder
	srv := httptest.NewServer(invokeAPI("OrdersFn", fn, &logs))
	defer srv.Close()
	do := func(method, path, body string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp, string(raw)
	}
	path := "/2015-03-31/functions/OrdersFn/invocations"

	fn.res = &lambdaemu.Result{RequestID: "req-1", Payload: []byte(`{"ok":true}`)}
	resp, body := do("POST", path, `{"a":1}`, nil)
	if resp.StatusCode != 200 || body != `{"ok":true}` || resp.Header.Get("X-Amz-Function-Error") != "" || resp.Header.Get("X-Amzn-Requestid") != "req-1" {
		t.Errorf("success: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	resp, _ = do("POST", "/2015-03-31/functions/arn:aws:lambda:us-east-1:123456789012:function:OrdersFn/invocations?Qualifier=$LATEST", "", nil)
	if resp.StatusCode != 200 || fn.events[len(fn.events)-1] != "{}" {
		t.Errorf("by ARN, empty body: %d, event %q", resp.StatusCode, fn.events[len(fn.events)-1])
	}

	fn.res = &lambdaemu.Result{RequestID: "req-2", ErrorType: "Runtime.ExitError", Payload: []byte(`{"errorType":"Runtime.ExitError"}`)}
	resp, body = do("POST", path, `{}`, nil)
	if resp.StatusCode != 200 || resp.Header.Get("X-Amz-Function-Error") != "Unhandled" || !strings.Contains(body, "Runtime.ExitError") {
		t.Errorf("function error: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	fn.res, fn.err = nil, &lambdaemu.InitError{ErrorType: "Extension.Crash", Message: "ephemera exited"}
	resp, body = do("POST", path, `{}`, nil)
	if resp.StatusCode != 200 || resp.Header.Get("X-Amz-Function-Error") != "Unhandled" || !strings.Contains(body, `"errorType":"Extension.Crash"`) {
		t.Errorf("INIT failure: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	fn.err = errors.New("lambdaemu: closed")
	if resp, _ = do("POST", path, `{}`, nil); resp.StatusCode != 500 || resp.Header.Get("X-Amzn-ErrorType") != "ServiceException" {
		t.Errorf("emulator failure: %d %v", resp.StatusCode, resp.Header)
	}

	ran := len(fn.events)
	for name, tc := range map[string]struct {
		method, path, body string
		hdr                map[string]string
		status             int
		typ                string
	}{
		"unknown function":  {"POST", "/2015-03-31/functions/Other/invocations", "{}", nil, 404, "ResourceNotFoundException"},
		"unknown path":      {"POST", "/2015-03-31/functions/OrdersFn", "{}", nil, 404, "ResourceNotFoundException"},
		"GET":               {"GET", path, "", nil, 405, "InvalidRequestContentException"},
		"Event invocation":  {"POST", path, "{}", map[string]string{"X-Amz-Invocation-Type": "Event"}, 400, "InvalidParameterValueException"},
		"event is not JSON": {"POST", path, "{", nil, 400, "InvalidRequestContentException"},
	} {
		resp, body := do(tc.method, tc.path, tc.body, tc.hdr)
		if resp.StatusCode != tc.status || resp.Header.Get("X-Amzn-ErrorType") != tc.typ {
			t.Errorf("%s: %d %s %v, want %d %s", name, resp.StatusCode, body, resp.Header, tc.status, tc.typ)
		}
	}
	if len(fn.events) != ran {
		t.Errorf("a refused request reached the function: %v", fn.events[ran:])
	}
	if !strings.Contains(logs.String(), "[local] invoke OrdersFn req-1: ok in ") {
		t.Errorf("no invocation notice:\n%s", logs.String())
	}
}
