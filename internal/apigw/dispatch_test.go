package apigw

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// echo answers with what it saw, as JSON, and sets two cookies so that the
// answer's shape shows where multi-value headers went.
func echo(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	http.SetCookie(w, &http.Cookie{Name: "a", Value: "1"})
	http.SetCookie(w, &http.Cookie{Name: "b", Value: "2"})
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"method": r.Method, "uri": r.RequestURI, "host": r.Host, "remote": r.RemoteAddr, "body": string(body),
	})
}

// captureLogs sends slog's default logger to a buffer for the test.
func captureLogs(t *testing.T) *bytes.Buffer {
	t.Helper()
	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	return &logs
}

func readFixture(t *testing.T, path string) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answerShape tells which payload format's answer raw is: only a v2 answer
// has "cookies" (aws-lambda-go's v2 struct also has a multiValueHeaders,
// always null here), and a v1 answer keeps every header in a non-null
// "multiValueHeaders".
func answerShape(t *testing.T, raw json.RawMessage) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %s", err, raw)
	}
	mv, hasMV := m["multiValueHeaders"]
	_, hasCookies := m["cookies"]
	switch {
	case hasCookies && (!hasMV || string(mv) == "null"):
		return "v2"
	case !hasCookies && hasMV && string(mv) != "null":
		return "v1"
	}
	return "neither"
}

// TestDispatcherServesBothFormats sends real-shaped v1 and v2 events through
// the one handler functions/broker starts and checks that each is answered
// in its own shape, with what the handler saw.
func TestDispatcherServesBothFormats(t *testing.T) {
	tests := []struct {
		name   string
		event  string
		v1     bool
		method string
		uri    string
		host   string
		remote string
		body   string
	}{
		{"v1 get health", "testdata/rest-get-health.json", true, "GET", "/v1/health", restHost, "10.0.1.25:0", ""},
		{"v1 stage path", "testdata/rest-stage-path.json", true, "POST", "/v1/leases/l-1/revoke", restHost, "10.0.1.25:0", ""},
		{"v1 base64", "testdata/rest-post-base64.json", true, "POST", "/v1/blobs/a%2Fb", restHost, "10.0.1.25:0", "\x00\x01\ufffd\ufffdBC"},
		{"v1 the broker's sam event", "../../sam/events/issue-rest.json", true, "POST", "/v1/credentials",
			"abc123defg-vpce-0123456789abcdef0.execute-api.eu-west-1.amazonaws.com", "10.0.1.25:0", ""},
		{"v2 get", "testdata/get.json", false, "GET", "/items/42?a=1&b=two&b=three",
			"r3pmxmplak.execute-api.us-east-2.amazonaws.com", "205.255.255.176:0", ""},
		{"v2 post json", "testdata/post-json.json", false, "POST", "/items", "api.example.com", "[2001:db8::1]:0",
			"{\"name\":\"widget\",\"qty\":3}\n"},
		{"v2 the broker's sam event", "../../sam/events/issue.json", false, "POST", "/v1/credentials", "", "", ""},
	}
	handler := Dispatcher(http.HandlerFunc(echo))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := handler(context.Background(), readFixture(t, tt.event))
			if err != nil {
				t.Fatalf("Dispatcher error: %v", err)
			}
			shape := answerShape(t, raw)
			var status int
			var body string
			if tt.v1 {
				if shape != "v1" {
					t.Fatalf("not a v1 answer: %s", raw)
				}
				var res events.APIGatewayProxyResponse
				if err := json.Unmarshal(raw, &res); err != nil {
					t.Fatal(err)
				}
				eq(t, "set-cookie", res.MultiValueHeaders["Set-Cookie"], []string{"a=1", "b=2"})
				status, body = res.StatusCode, res.Body
			} else {
				if shape != "v2" {
					t.Fatalf("not a v2 answer: %s", raw)
				}
				var res events.APIGatewayV2HTTPResponse
				if err := json.Unmarshal(raw, &res); err != nil {
					t.Fatal(err)
				}
				eq(t, "cookies", res.Cookies, []string{"a=1", "b=2"})
				status, body = res.StatusCode, res.Body
			}
			eq(t, "status", status, http.StatusOK)
			var got map[string]string
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			eq(t, "method", got["method"], tt.method)
			eq(t, "uri", got["uri"], tt.uri)
			if tt.host != "" {
				eq(t, "host", got["host"], tt.host)
				eq(t, "remote", got["remote"], tt.remote)
			}
			if !strings.HasPrefix(tt.event, "../../sam/events/") {
				eq(t, "body", got["body"], tt.body)
			} else if !strings.HasPrefix(got["body"], `{"identity":{`) {
				t.Errorf("the sam event's body did not reach the handler: %q", got["body"])
			}
		})
	}
}

// TestDispatcherRefusesOtherEvents: an event of neither format is answered
// 400 in the v2 shape and logged with its field names but not its values; a
// known format whose fields do not decode is answered 400 in its own shape.
func TestDispatcherRefusesOtherEvents(t *testing.T) {
	tests := []struct {
		name    string
		event   string
		v1      bool
		message string
		fields  string // expected "fields" in the warning, as JSON
	}{
		{"empty object", `{}`, false, "unsupported event", `[]`},
		{"schedule event", `{"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.events","detail":{}}`,
			false, "unsupported event", `["detail","detail-type","id","source","version"]`},
		{"payload v1 version without httpMethod", `{"version":"1.0","token":"s3cr3t-value"}`,
			false, "unsupported event", `["token","version"]`},
		{"version 2 as a number", `{"version":2,"rawPath":"/"}`, false, "unsupported event", `["rawPath","version"]`},
		{"array", `[1,2]`, false, "unsupported event", `null`},
		{"null", `null`, false, "unsupported event", `null`},
		{"string", `"GET /"`, false, "unsupported event", `null`},
		{"not JSON", `{"httpMethod":`, false, "unsupported event", `null`},
		{"v1 with headers of the wrong type", `{"httpMethod":"GET","path":"/","headers":5}`,
			true, "invalid event", `["headers","httpMethod","path"]`},
		{"v2 with headers of the wrong type", `{"version":"2.0","rawPath":"/","headers":["s3cr3t-value"]}`,
			false, "invalid event", `["headers","rawPath","version"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := captureLogs(t)
			called := false
			handler := Dispatcher(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true }))
			ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-odd"})
			raw, err := handler(ctx, json.RawMessage(tt.event))
			if err != nil {
				t.Fatalf("Dispatcher error: %v", err)
			}
			if called {
				t.Error("handler called for a refused event")
			}
			shape := answerShape(t, raw)
			if tt.v1 {
				var res events.APIGatewayProxyResponse
				if err := json.Unmarshal(raw, &res); err != nil || shape != "v1" {
					t.Fatalf("not a v1 answer (%v): %s", err, raw)
				}
				eq(t, "status", res.StatusCode, http.StatusBadRequest)
				eq(t, "headers", res.MultiValueHeaders, map[string][]string{"Content-Type": {"application/json"}})
				wantErrorBody(t, res.Body, "invalid_request", tt.message, "req-odd")
			} else {
				var res events.APIGatewayV2HTTPResponse
				if err := json.Unmarshal(raw, &res); err != nil || shape != "v2" {
					t.Fatalf("not a v2 answer (%v): %s", err, raw)
				}
				eq(t, "status", res.StatusCode, http.StatusBadRequest)
				eq(t, "headers", res.Headers, map[string]string{"Content-Type": "application/json"})
				wantErrorBody(t, res.Body, "invalid_request", tt.message, "req-odd")
			}

			var rec struct {
				Level     string          `json:"level"`
				RequestID string          `json:"request_id"`
				Bytes     int             `json:"bytes"`
				Fields    json.RawMessage `json:"fields"`
			}
			if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
				t.Fatalf("want one JSON warning, got %v: %s", err, logs)
			}
			eq(t, "level", rec.Level, "WARN")
			eq(t, "request_id", rec.RequestID, "req-odd")
			eq(t, "bytes", rec.Bytes, len(tt.event))
			eq(t, "fields", string(rec.Fields), tt.fields)
			if strings.Contains(logs.String(), "s3cr3t-value") {
				t.Errorf("warning logs a value: %s", logs)
			}
		})
	}
}

// TestDetectFormat pins the dispatch rule: "version":"2.0" wins, then any
// top-level httpMethod (an HTTP API's payload 1.0 included), else unknown.
func TestDetectFormat(t *testing.T) {
	tests := []struct {
		event string
		want  format
	}{
		{`{"version":"2.0","rawPath":"/"}`, formatV2},
		{`{"version":"2.0","httpMethod":"GET"}`, formatV2},
		{`{"Version":"2.0"}`, formatV2},
		{`{"version":"1.0","httpMethod":"GET","path":"/"}`, formatV1},
		{`{"httpMethod":"GET"}`, formatV1},
		{`{"httpMethod":null}`, formatV1},
		{`{"version":"2.1","requestContext":{"httpMethod":"GET"}}`, formatUnknown},
		{`{"version":2}`, formatUnknown},
		{`{}`, formatUnknown},
		{`[]`, formatUnknown},
		{``, formatUnknown},
	}
	for _, tt := range tests {
		if got := detectFormat([]byte(tt.event)); got != tt.want {
			t.Errorf("detectFormat(%s) = %d, want %d", tt.event, got, tt.want)
		}
	}
	for _, name := range restFixtures {
		if got := detectFormat(readFixture(t, filepath.Join("testdata", name))); got != formatV1 {
			t.Errorf("%s: format %d, want v1", name, got)
		}
	}
	for _, name := range []string{"get.json", "post-json.json", "post-base64.json", "bad-base64.json"} {
		if got := detectFormat(readFixture(t, filepath.Join("testdata", name))); got != formatV2 {
			t.Errorf("%s: format %d, want v2", name, got)
		}
	}
}

// FuzzDispatcher: whatever the event, the answer is a JSON object with a
// status of 200 (the handler ran) or 400, and never a Lambda error.
func FuzzDispatcher(f *testing.F) {
	for _, name := range append([]string{"get.json", "post-json.json", "bad-base64.json"}, restFixtures...) {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"httpMethod":"GET","path":"/","headers":5}`))
	f.Add([]byte(`{"version":"2.0"}`))
	f.Add([]byte(`null`))
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(io.Discard, nil)))
	f.Cleanup(func() { slog.SetDefault(prev) })
	handler := Dispatcher(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	f.Fuzz(func(t *testing.T, event []byte) {
		raw, err := handler(context.Background(), event)
		if err != nil {
			t.Fatalf("Dispatcher error: %v", err)
		}
		var res struct {
			StatusCode int `json:"statusCode"`
		}
		if err := json.Unmarshal(raw, &res); err != nil {
			t.Fatalf("answer %s: %v", raw, err)
		}
		if res.StatusCode != http.StatusOK && res.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d: %s", res.StatusCode, raw)
		}
	})
}
