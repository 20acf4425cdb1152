package apigw

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
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

const restHost = "abc123defg-vpce-0123456789abcdef0.execute-api.eu-west-1.amazonaws.com"

// restFixtures are the REST API (payload v1) events in testdata.
var restFixtures = []string{
	"rest-get-health.json", "rest-multi-value.json", "rest-post-base64.json",
	"rest-post-json.json", "rest-stage-path.json",
}

// loadEventV1 reads a REST API fixture as the Lambda runtime would: without
// refusing the fields aws-lambda-go's struct lacks.
func loadEventV1(t testing.TB, name string) events.APIGatewayProxyRequest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var e events.APIGatewayProxyRequest
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return e
}

// TestRESTFixturesCarryUnknownFields proves the fixtures exercise lenient
// decoding: a strict decoder refuses each of them because a real private
// REST API event has fields (identity.vpceId, vpcId, principalOrgId) that
// events.APIGatewayProxyRequest lacks.
func TestRESTFixturesCarryUnknownFields(t *testing.T) {
	for _, name := range restFixtures {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var e events.APIGatewayProxyRequest
		err = dec.Decode(&e)
		if err == nil || !strings.Contains(err.Error(), `unknown field "vpcId"`) {
			t.Errorf("%s: strict decode error = %v, want the unknown field vpcId", name, err)
		}
		if loadEventV1(t, name).RequestContext.Identity.SourceIP == "" {
			t.Errorf("%s: lenient decode lost the source IP", name)
		}
	}
}

func TestRequestV1RoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		mutate  func(*events.APIGatewayProxyRequest)
		check   func(t *testing.T, s seen)
	}{
		{
			name:    "get health",
			fixture: "rest-get-health.json",
			check: func(t *testing.T, s seen) {
				eq(t, "method", s.Method, "GET")
				eq(t, "path", s.Path, "/v1/health")
				eq(t, "request uri", s.RequestURI, "/v1/health")
				eq(t, "raw query", s.RawQuery, "")
				eq(t, "host", s.Host, restHost)
				eq(t, "host header removed", s.Header["Host"], []string(nil))
				eq(t, "remote addr", s.RemoteAddr, "10.0.1.25:0")
				eq(t, "proto", s.Proto, "HTTP/1.1")
				eq(t, "vpce header", s.Header["X-Amzn-Vpce-Id"], []string{"vpce-0123456789abcdef0"})
				eq(t, "body", string(s.Body), "")
				eq(t, "content length", s.ContentLength, int64(0))
			},
		},
		{
			name:    "post json body ipv6 source",
			fixture: "rest-post-json.json",
			check: func(t *testing.T, s seen) {
				eq(t, "method", s.Method, "POST")
				eq(t, "request uri", s.RequestURI, "/v1/leases/l-0123456789abcdef/renew")
				eq(t, "content type", s.Header["Content-Type"], []string{"application/json"})
				eq(t, "remote addr", s.RemoteAddr, "[2001:db8::25]:0")
				eq(t, "body", string(s.Body), "{\"lease_id\":\"l-0123456789abcdef\",\"ttl_seconds\":600}\n")
				eq(t, "content length", s.ContentLength, int64(52))
				eq(t, "content-length header", s.Header.Get("Content-Length"), "52")
			},
		},
		{
			name:    "base64 body decoded and escaped path kept",
			fixture: "rest-post-base64.json",
			check: func(t *testing.T, s seen) {
				eq(t, "path", s.Path, "/v1/blobs/a/b")
				eq(t, "raw path", s.RawPath, "/v1/blobs/a%2Fb")
				eq(t, "request uri", s.RequestURI, "/v1/blobs/a%2Fb")
				eq(t, "body", s.Body, []byte{0x00, 0x01, 0xff, 0x80, 'B', 'C'})
				eq(t, "content length", s.ContentLength, int64(6))
			},
		},
		{
			name:    "multi-value headers and query",
			fixture: "rest-multi-value.json",
			check: func(t *testing.T, s seen) {
				eq(t, "path", s.Path, "/v1/items/42")
				eq(t, "raw query (sorted, re-escaped)", s.RawQuery, "a=1&b=two&b=three&q=a+b%26c%3Dd%2F%C3%A9")
				eq(t, "request uri", s.RequestURI, "/v1/items/42?a=1&b=two&b=three&q=a+b%26c%3Dd%2F%C3%A9")
				eq(t, "query", s.Query, map[string][]string{"a": {"1"}, "b": {"two", "three"}, "q": {"a b&c=d/é"}})
				eq(t, "accept", s.Header["Accept"], []string{"application/json", "text/plain"})
				eq(t, "cookie", s.Header["Cookie"], []string{"session=abc123", "theme=dark"})
				eq(t, "joined header kept as one value", s.Header["X-Multi"], []string{"one,two"})
			},
		},
		{
			name:    "stage-prefixed requestContext.path does not leak",
			fixture: "rest-stage-path.json",
			check: func(t *testing.T, s seen) {
				eq(t, "method", s.Method, "POST")
				eq(t, "path", s.Path, "/v1/leases/l-1/revoke")
				eq(t, "request uri", s.RequestURI, "/v1/leases/l-1/revoke")
			},
		},
		{
			name:    "fallbacks: single-value maps, domainName, no source ip",
			fixture: "rest-multi-value.json",
			mutate: func(e *events.APIGatewayProxyRequest) {
				e.MultiValueHeaders = nil
				e.MultiValueQueryStringParameters = map[string][]string{}
				delete(e.Headers, "Host")
				e.RequestContext.Identity.SourceIP = ""
			},
			check: func(t *testing.T, s seen) {
				eq(t, "query from queryStringParameters", s.Query, map[string][]string{"a": {"1"}, "b": {"three"}, "q": {"a b&c=d/é"}})
				eq(t, "accept from headers", s.Header["Accept"], []string{"text/plain"})
				eq(t, "host", s.Host, restHost)
				eq(t, "remote addr", s.RemoteAddr, "")
			},
		},
		{
			name:    "empty path is /, header keys canonicalized and merged in order",
			fixture: "rest-get-health.json",
			mutate: func(e *events.APIGatewayProxyRequest) {
				e.Path = ""
				e.MultiValueHeaders = map[string][]string{
					"x-custom-thing": {"b"}, "X-Custom-Thing": {"a"}, "HOST": {"h.example"}, "x-empty": {},
				}
			},
			check: func(t *testing.T, s seen) {
				eq(t, "path", s.Path, "/")
				eq(t, "request uri", s.RequestURI, "/")
				eq(t, "x-custom-thing", s.Header["X-Custom-Thing"], []string{"a", "b"})
				eq(t, "x-empty dropped", s.Header["X-Empty"], []string(nil))
				eq(t, "host", s.Host, "h.example")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := loadEventV1(t, tt.fixture)
			if tt.mutate != nil {
				tt.mutate(&e)
			}
			if e.Path != "" && !strings.HasSuffix(e.RequestContext.Path, e.Path) {
				t.Fatalf("fixture: requestContext.path %q does not end with path %q", e.RequestContext.Path, e.Path)
			}
			var s seen
			res, err := HandlerV1(capture(&s))(context.Background(), e)
			if err != nil {
				t.Fatalf("HandlerV1 error: %v", err)
			}
			if res.StatusCode != http.StatusNoContent {
				t.Fatalf("status = %d, body %q", res.StatusCode, res.Body)
			}
			if stage := "/" + e.RequestContext.Stage + "/"; strings.HasPrefix(s.RequestURI, stage+strings.TrimPrefix(e.Path, "/")) {
				t.Errorf("request uri %q carries the stage prefix %q", s.RequestURI, stage)
			}
			tt.check(t, s)
		})
	}
}

func TestInvalidRequestsV1(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*events.APIGatewayProxyRequest)
		message string
	}{
		{"bad base64", func(e *events.APIGatewayProxyRequest) {
			e.IsBase64Encoded, e.Body = true, "!!! not base64 !!!"
		}, "invalid base64 body"},
		{"bad path escape", func(e *events.APIGatewayProxyRequest) { e.Path = "/a%zz" }, "invalid path"},
		{"relative path", func(e *events.APIGatewayProxyRequest) { e.Path = "v1/health" }, "invalid path"},
		{"control char in path", func(e *events.APIGatewayProxyRequest) { e.Path = "/a\nb" }, "invalid path"},
		{"question mark in path", func(e *events.APIGatewayProxyRequest) { e.Path = "/a?b" }, "invalid path"},
		{"hash in path", func(e *events.APIGatewayProxyRequest) { e.Path = "/a#b" }, "invalid path"},
		{"missing method", func(e *events.APIGatewayProxyRequest) { e.HTTPMethod = "" }, "invalid method"},
		{"bad method", func(e *events.APIGatewayProxyRequest) { e.HTTPMethod = "GET /" }, "invalid method"},
		{"method checked before path", func(e *events.APIGatewayProxyRequest) {
			e.HTTPMethod, e.Path = "", "relative"
		}, "invalid method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := loadEventV1(t, "rest-post-json.json")
			tt.mutate(&e)

			_, err := RequestV1(context.Background(), e)
			re, ok := errors.AsType[*RequestError](err)
			if !ok || re.Reason != tt.message {
				t.Fatalf("RequestV1 error = %v, want *RequestError %q", err, tt.message)
			}

			called := false
			h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })
			ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-123"})
			res, err := HandlerV1(h)(ctx, e)
			if err != nil {
				t.Fatalf("HandlerV1 returned error %v; want nil", err)
			}
			if called {
				t.Error("handler called for invalid request")
			}
			eq(t, "status", res.StatusCode, http.StatusBadRequest)
			eq(t, "headers", res.MultiValueHeaders, map[string][]string{"Content-Type": {"application/json"}})
			eq(t, "base64", res.IsBase64Encoded, false)
			wantErrorBody(t, res.Body, "invalid_request", tt.message, "req-123")
		})
	}
}

func TestResponsesV1(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		handler     http.HandlerFunc
		status      int
		headers     map[string][]string
		body        string
		decodedBody []byte // set when the body must be base64
	}{
		{
			name: "json stays a string",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, `{"id":"42"}`)
			},
			status:  http.StatusCreated,
			headers: map[string][]string{"Content-Type": {"application/json"}},
			body:    `{"id":"42"}`,
		},
		{
			name: "set-cookie and repeated headers stay separate values",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.SetCookie(w, &http.Cookie{Name: "a", Value: "1", Path: "/"})
				http.SetCookie(w, &http.Cookie{Name: "b", Value: "2", HttpOnly: true})
				w.Header().Add("Vary", "Accept")
				w.Header().Add("Vary", "Origin")
				w.Header()["X-Suppressed"] = nil
				w.Header().Set("Content-Type", "text/html")
				io.WriteString(w, "<p>ok</p>")
			},
			status: http.StatusOK,
			headers: map[string][]string{
				"Set-Cookie":   {"a=1; Path=/", "b=2; HttpOnly"},
				"Vary":         {"Accept", "Origin"},
				"Content-Type": {"text/html"},
			},
			body: "<p>ok</p>",
		},
		{
			name:        "binary is base64",
			handler:     writePNG,
			status:      http.StatusOK,
			headers:     map[string][]string{"Content-Type": {"image/png"}},
			decodedBody: pngBytes,
		},
		{
			name: "missing content type sniffed",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "hello")
			},
			status:  http.StatusOK,
			headers: map[string][]string{"Content-Type": {"text/plain; charset=utf-8"}},
			body:    "hello",
		},
		{
			name:    "HEAD discards body",
			method:  http.MethodHead,
			handler: writeText,
			status:  http.StatusOK,
			headers: map[string][]string{"Content-Type": {"text/plain"}},
		},
		{
			name:    "no write defaults to 200 empty",
			handler: func(w http.ResponseWriter, r *http.Request) {},
			status:  http.StatusOK,
			headers: map[string][]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := loadEventV1(t, "rest-get-health.json")
			if tt.method != "" {
				e.HTTPMethod = tt.method
			}
			res, err := HandlerV1(tt.handler)(context.Background(), e)
			if err != nil {
				t.Fatalf("HandlerV1 error: %v", err)
			}
			eq(t, "status", res.StatusCode, tt.status)
			eq(t, "multiValueHeaders", res.MultiValueHeaders, tt.headers)
			eq(t, "headers (all in multiValueHeaders)", res.Headers, map[string]string{})
			eq(t, "isBase64Encoded", res.IsBase64Encoded, tt.decodedBody != nil)
			eqBody(t, res.Body, tt.decodedBody != nil, tt.body, tt.decodedBody)

			// The same handler behind payload v2 answers alike.
			e2 := loadEvent(t, "get.json")
			e2.RequestContext.HTTP.Method = e.HTTPMethod
			res2, _ := Handler(tt.handler)(context.Background(), e2)
			eq(t, "v2 status", res2.StatusCode, res.StatusCode)
			eq(t, "v2 body", res2.Body, res.Body)
			eq(t, "v2 base64", res2.IsBase64Encoded, res.IsBase64Encoded)
		})
	}
}

func TestPanicRecoveredV1(t *testing.T) {
	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	e := loadEventV1(t, "rest-post-json.json")
	e.Body = `{"secret":"do-not-log"}`
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-panic"})
	res, err := HandlerV1(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Partial", "yes")
		panic("boom")
	}))(ctx, e)
	if err != nil {
		t.Fatalf("HandlerV1 returned error %v; want nil", err)
	}
	eq(t, "status", res.StatusCode, http.StatusInternalServerError)
	eq(t, "headers", res.MultiValueHeaders, map[string][]string{"Content-Type": {"application/json"}})
	wantErrorBody(t, res.Body, "internal", "internal error", "req-panic")
	out := logs.String()
	if !strings.Contains(out, `"path":"/v1/leases/l-0123456789abcdef/renew"`) || !strings.Contains(out, `"request_id":"req-panic"`) {
		t.Errorf("panic log lacks path or request id: %s", out)
	}
	for _, secret := range []string{"do-not-log", "PLACEHOLDER-SESSION-TOKEN", "Signature="} {
		if strings.Contains(out, secret) {
			t.Errorf("log leaks %q", secret)
		}
	}
}

// TestBodyLimitV1 proves a handler's http.MaxBytesReader bounds a v1 body
// as it bounds a v2 one: the limit counts decoded bytes, not base64 text.
func TestBodyLimitV1(t *testing.T) {
	const limit = 6
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit)); err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				w.WriteHeader(http.StatusRequestEntityTooLarge)
				return
			}
			panic(err)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	for _, tt := range []struct {
		body []byte
		want int
	}{
		{bytes.Repeat([]byte{0xff}, limit), http.StatusNoContent},
		{bytes.Repeat([]byte{0xff}, limit+1), http.StatusRequestEntityTooLarge},
	} {
		e := loadEventV1(t, "rest-post-base64.json")
		e.Body = base64.StdEncoding.EncodeToString(tt.body)
		res, _ := HandlerV1(h)(context.Background(), e)
		eq(t, fmt.Sprintf("status for a %d-byte body", len(tt.body)), res.StatusCode, tt.want)
	}
}

func FuzzRequestV1(f *testing.F) {
	f.Add("GET", "/v1/health", "a", "1", "Accept", "application/json", "", false)
	f.Add("POST", "/v1/credentials", "", "", "Content-Type", "application/json", `{"a":1}`, false)
	f.Add("POST", "/v1/blobs/a%2Fb", "q", "a b&c=#", "x-multi", "one,two", "AAH/gEJD", true)
	f.Add("POST", "/upload", "", "", "", "", "!!! not base64 !!!", true)
	f.Add("", "", "", "", "", "", "", false)
	f.Add("GET /", "//evil.example/x", "#", "%zz", "Host", "evil.example", "", false)
	f.Add("DELETE", "/a%zz", "x", "\xff", "X\nY", "v\r\n", "\xff\x00", false)
	f.Add("HEAD", "relative", "", "", "host", "", "", true)

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(b)
	})
	handler := HandlerV1(h)
	f.Fuzz(func(t *testing.T, method, path, qk, qv, hk, hv, body string, isBase64 bool) {
		e := events.APIGatewayProxyRequest{
			Resource:   "/{proxy+}",
			Path:       path,
			HTTPMethod: method,
			MultiValueHeaders: map[string][]string{
				"Host": {"api.example.com"}, "Content-Type": {"application/octet-stream"}, hk: {hv, hv},
			},
			MultiValueQueryStringParameters: map[string][]string{qk: {qv, qv}},
			Body:                            body,
			IsBase64Encoded:                 isBase64,
		}
		e.RequestContext.Stage = "prod"
		e.RequestContext.Path = "/prod" + path
		e.RequestContext.Identity.SourceIP = "192.0.2.1"

		r, err := RequestV1(context.Background(), e)
		if err == nil {
			want := path
			if want == "" {
				want = "/"
			}
			if r.URL == nil || !strings.HasPrefix(r.URL.Path, "/") || !strings.HasPrefix(r.RequestURI, want) {
				t.Fatalf("bad URL %v (request uri %q) for path %q", r.URL, r.RequestURI, path)
			}
			if qk != "" && r.URL.Query()[qk][0] != qv {
				t.Fatalf("query %q=%q came back as %q", qk, qv, r.URL.Query()[qk])
			}
			got, _ := io.ReadAll(r.Body)
			if int64(len(got)) != r.ContentLength {
				t.Fatalf("ContentLength %d != len(body) %d", r.ContentLength, len(got))
			}
		} else if _, ok := errors.AsType[*RequestError](err); !ok {
			t.Fatalf("error %v is not a *RequestError", err)
		}

		res, herr := handler(context.Background(), e)
		checkFuzzAnswer(t, err, res, res.StatusCode, res.Body, herr)
	})
}
