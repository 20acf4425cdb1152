package apigw

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// loadEvent reads a testdata fixture.
func loadEvent(t testing.TB, name string) events.APIGatewayV2HTTPRequest {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var e events.APIGatewayV2HTTPRequest
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return e
}

// seen is what the handler observed of the request.
type seen struct {
	Method, Path, RawPath, RawQuery, RequestURI, Host, RemoteAddr, Proto string
	Query                                                                map[string][]string
	Header                                                               http.Header
	Body                                                                 []byte
	ContentLength                                                        int64
}

func capture(dst *seen) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			panic(err)
		}
		*dst = seen{
			Method: r.Method, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery,
			RequestURI: r.RequestURI, Host: r.Host, RemoteAddr: r.RemoteAddr, Proto: r.Proto,
			Query: r.URL.Query(), Header: r.Header, Body: body, ContentLength: r.ContentLength,
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func TestRequestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		mutate  func(*events.APIGatewayV2HTTPRequest)
		check   func(t *testing.T, s seen)
	}{
		{
			name:    "get with query headers cookies",
			fixture: "get.json",
			check: func(t *testing.T, s seen) {
				eq(t, "method", s.Method, "GET")
				eq(t, "path", s.Path, "/items/42")
				eq(t, "raw query", s.RawQuery, "a=1&b=two&b=three")
				eq(t, "request uri", s.RequestURI, "/items/42?a=1&b=two&b=three")
				eq(t, "query", s.Query, map[string][]string{"a": {"1"}, "b": {"two", "three"}})
				eq(t, "host", s.Host, "r3pmxmplak.execute-api.us-east-2.amazonaws.com")
				eq(t, "remote addr", s.RemoteAddr, "205.255.255.176:0")
				eq(t, "proto", s.Proto, "HTTP/1.1")
				eq(t, "accept", s.Header["Accept"], []string{"application/json"})
				eq(t, "user-agent", s.Header.Get("User-Agent"), "curl/8.5.0")
				eq(t, "joined header kept as one value", s.Header["X-Multi"], []string{"one,two"})
				eq(t, "cookie", s.Header["Cookie"], []string{"session=abc123; theme=dark"})
				eq(t, "host header removed", s.Header["Host"], []string(nil))
				eq(t, "body", string(s.Body), "")
				eq(t, "content length", s.ContentLength, int64(0))
			},
		},
		{
			name:    "post json body ipv6 source",
			fixture: "post-json.json",
			check: func(t *testing.T, s seen) {
				eq(t, "method", s.Method, "POST")
				eq(t, "request uri", s.RequestURI, "/items")
				eq(t, "raw query", s.RawQuery, "")
				eq(t, "content type", s.Header.Get("Content-Type"), "application/json")
				eq(t, "host", s.Host, "api.example.com")
				eq(t, "remote addr", s.RemoteAddr, "[2001:db8::1]:0")
				eq(t, "body", string(s.Body), "{\"name\":\"widget\",\"qty\":3}\n")
				eq(t, "content length", s.ContentLength, int64(26))
			},
		},
		{
			name:    "base64 body decoded and escaped path kept",
			fixture: "post-base64.json",
			check: func(t *testing.T, s seen) {
				eq(t, "method", s.Method, "PUT")
				eq(t, "path", s.Path, "/blobs/a/b")
				eq(t, "raw path", s.RawPath, "/blobs/a%2Fb")
				eq(t, "request uri", s.RequestURI, "/blobs/a%2Fb")
				eq(t, "body", s.Body, []byte{0x00, 0x01, 0xff, 0x80, 'B', 'C'})
				eq(t, "content length", s.ContentLength, int64(6))
			},
		},
		{
			name:    "fallbacks: http.path, domainName, no source ip",
			fixture: "get.json",
			mutate: func(e *events.APIGatewayV2HTTPRequest) {
				e.RawPath = ""
				e.RequestContext.HTTP.Path = "/fallback"
				e.RawQueryString = ""
				delete(e.Headers, "host")
				e.RequestContext.DomainName = "fallback.example.com"
				e.RequestContext.HTTP.SourceIP = ""
				e.Cookies = nil
			},
			check: func(t *testing.T, s seen) {
				eq(t, "path", s.Path, "/fallback")
				eq(t, "request uri", s.RequestURI, "/fallback")
				eq(t, "host", s.Host, "fallback.example.com")
				eq(t, "remote addr", s.RemoteAddr, "")
				eq(t, "cookie", s.Header["Cookie"], []string(nil))
			},
		},
		{
			name:    "header keys canonicalized",
			fixture: "get.json",
			mutate: func(e *events.APIGatewayV2HTTPRequest) {
				e.Headers = map[string]string{"x-custom-thing": "v", "HOST": "h.example"}
			},
			check: func(t *testing.T, s seen) {
				eq(t, "x-custom-thing", s.Header["X-Custom-Thing"], []string{"v"})
				eq(t, "host", s.Host, "h.example")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := loadEvent(t, tt.fixture)
			if tt.mutate != nil {
				tt.mutate(&e)
			}
			var s seen
			res, err := Handler(capture(&s))(context.Background(), e)
			if err != nil {
				t.Fatalf("Handler error: %v", err)
			}
			if res.StatusCode != http.StatusNoContent {
				t.Fatalf("status = %d, body %q", res.StatusCode, res.Body)
			}
			tt.check(t, s)
		})
	}
}

func TestRequestContextAndFields(t *testing.T) {
	type key struct{}
	ctx := context.WithValue(context.Background(), key{}, "v")
	r, err := Request(ctx, loadEvent(t, "post-json.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Context().Value(key{}) != "v" {
		t.Error("request context does not carry ctx values")
	}
	if r.ProtoMajor != 1 || r.ProtoMinor != 1 {
		t.Errorf("proto = %d.%d", r.ProtoMajor, r.ProtoMinor)
	}
	if r.URL.IsAbs() || r.URL.Host != "" {
		t.Errorf("URL should be relative, got %v", r.URL)
	}
	b, err := r.GetBody()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(b)
	eq(t, "GetBody", string(got), "{\"name\":\"widget\",\"qty\":3}\n")
}

func TestInvalidRequests(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*events.APIGatewayV2HTTPRequest)
		message string
	}{
		{"bad base64", func(e *events.APIGatewayV2HTTPRequest) {}, "invalid base64 body"},
		{"bad path escape", func(e *events.APIGatewayV2HTTPRequest) {
			e.IsBase64Encoded = false
			e.RawPath = "/a%zz"
		}, "invalid path"},
		{"relative path", func(e *events.APIGatewayV2HTTPRequest) {
			e.IsBase64Encoded = false
			e.RawPath = "upload"
		}, "invalid path"},
		{"control char in path", func(e *events.APIGatewayV2HTTPRequest) {
			e.IsBase64Encoded = false
			e.RawPath = "/a\nb"
		}, "invalid path"},
		{"question mark in path", func(e *events.APIGatewayV2HTTPRequest) {
			e.IsBase64Encoded = false
			e.RawPath = "/a?b"
		}, "invalid path"},
		{"missing method", func(e *events.APIGatewayV2HTTPRequest) {
			e.IsBase64Encoded = false
			e.RequestContext.HTTP.Method = ""
		}, "invalid method"},
		{"bad method", func(e *events.APIGatewayV2HTTPRequest) {
			e.IsBase64Encoded = false
			e.RequestContext.HTTP.Method = "GET /"
		}, "invalid method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := loadEvent(t, "bad-base64.json")
			tt.mutate(&e)

			_, err := Request(context.Background(), e)
			if _, ok := errors.AsType[*RequestError](err); !ok {
				t.Fatalf("Request error = %v, want *RequestError", err)
			}

			called := false
			h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { called = true })
			ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-123"})
			res, err := Handler(h)(ctx, e)
			if err != nil {
				t.Fatalf("Handler returned error %v; want nil", err)
			}
			if called {
				t.Error("handler called for invalid request")
			}
			eq(t, "status", res.StatusCode, http.StatusBadRequest)
			eq(t, "content type", res.Headers["Content-Type"], "application/json")
			eq(t, "base64", res.IsBase64Encoded, false)
			wantErrorBody(t, res.Body, "invalid_request", tt.message, "req-123")
		})
	}
}

// Handlers the response tests of both payload formats serve.
var (
	// pngBytes is not UTF-8: the answer must be base64.
	pngBytes = []byte{0x89, 'P', 'N', 'G', 0x00, 0xff, 0xfe}
	// writePNG answers pngBytes as image/png.
	writePNG = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(pngBytes)
	}
	// writeText answers "body" as text/plain.
	writeText = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "body")
	}
)

func TestResponses(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		handler     http.HandlerFunc
		status      int
		headers     map[string]string
		cookies     []string
		body        string
		base64      bool
		decodedBody []byte
	}{
		{
			name: "json stays a string",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, `{"id":"42"}`)
			},
			status:  http.StatusCreated,
			headers: map[string]string{"Content-Type": "application/json; charset=utf-8"},
			body:    `{"id":"42"}`,
		},
		{
			name: "problem+json suffix is textual",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusRequestEntityTooLarge)
				io.WriteString(w, `{"title":"too large"}`)
			},
			status:  http.StatusRequestEntityTooLarge,
			headers: map[string]string{"Content-Type": "application/problem+json"},
			body:    `{"title":"too large"}`,
		},
		{
			name: "text via http.Error 404",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.NotFound(w, r)
			},
			status: http.StatusNotFound,
			headers: map[string]string{
				"Content-Type":           "text/plain; charset=utf-8",
				"X-Content-Type-Options": "nosniff",
			},
			body: "404 page not found\n",
		},
		{
			name:        "binary is base64",
			handler:     writePNG,
			status:      http.StatusOK,
			headers:     map[string]string{"Content-Type": "image/png"},
			base64:      true,
			decodedBody: pngBytes,
		},
		{
			name: "utf-8 octet-stream is still base64",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/octet-stream")
				io.WriteString(w, "hello")
			},
			status:      http.StatusOK,
			headers:     map[string]string{"Content-Type": "application/octet-stream"},
			base64:      true,
			decodedBody: []byte("hello"),
		},
		{
			name: "text content type with invalid utf-8 is base64",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/plain; charset=latin1")
				w.Write([]byte("caf\xe9"))
			},
			status:      http.StatusOK,
			headers:     map[string]string{"Content-Type": "text/plain; charset=latin1"},
			base64:      true,
			decodedBody: []byte("caf\xe9"),
		},
		{
			name: "missing content type sniffed like net/http",
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "hello, ")
				io.WriteString(w, "world")
			},
			status:  http.StatusOK,
			headers: map[string]string{"Content-Type": "text/plain; charset=utf-8"},
			body:    "hello, world",
		},
		{
			name: "suppressed content type with valid utf-8 is textual",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Content-Type"] = nil
				io.WriteString(w, "héllo")
			},
			status:  http.StatusOK,
			headers: map[string]string{},
			body:    "héllo",
		},
		{
			name: "set-cookie goes to cookies and multi-value headers joined",
			handler: func(w http.ResponseWriter, r *http.Request) {
				http.SetCookie(w, &http.Cookie{Name: "a", Value: "1", Path: "/"})
				http.SetCookie(w, &http.Cookie{Name: "b", Value: "2", HttpOnly: true})
				w.Header().Add("Vary", "Accept")
				w.Header().Add("Vary", "Origin")
				w.Header().Set("Content-Type", "text/html")
				w.WriteHeader(http.StatusOK)
				w.WriteHeader(http.StatusTeapot) // superfluous; ignored
				io.WriteString(w, "<p>ok</p>")
			},
			status:  http.StatusOK,
			headers: map[string]string{"Vary": "Accept, Origin", "Content-Type": "text/html"},
			cookies: []string{"a=1; Path=/", "b=2; HttpOnly"},
			body:    "<p>ok</p>",
		},
		{
			name: "no write defaults to 200 empty",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Thing", "y")
			},
			status:  http.StatusOK,
			headers: map[string]string{"X-Thing": "y"},
		},
		{
			name:    "HEAD discards body",
			method:  http.MethodHead,
			handler: writeText,
			status:  http.StatusOK,
			headers: map[string]string{"Content-Type": "text/plain"},
		},
		{
			name: "204 rejects body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusNoContent)
				if _, err := io.WriteString(w, "x"); !errors.Is(err, http.ErrBodyNotAllowed) {
					panic("want ErrBodyNotAllowed")
				}
			},
			status:  http.StatusNoContent,
			headers: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := loadEvent(t, "get.json")
			if tt.method != "" {
				e.RequestContext.HTTP.Method = tt.method
			}
			res, err := Handler(tt.handler)(context.Background(), e)
			if err != nil {
				t.Fatalf("Handler error: %v", err)
			}
			eq(t, "status", res.StatusCode, tt.status)
			eq(t, "headers", res.Headers, tt.headers)
			eq(t, "cookies", res.Cookies, tt.cookies)
			eq(t, "isBase64Encoded", res.IsBase64Encoded, tt.base64)
			eqBody(t, res.Body, tt.base64, tt.body, tt.decodedBody)
		})
	}
}

func TestPanicRecovered(t *testing.T) {
	var logs bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&logs, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })

	tests := []struct {
		name    string
		handler http.HandlerFunc
		logged  bool
	}{
		{"panic before write", func(w http.ResponseWriter, r *http.Request) {
			panic("boom")
		}, true},
		{"panic after partial write", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "partial")
			panic(errors.New("kaboom"))
		}, true},
		{"ErrAbortHandler not logged", func(w http.ResponseWriter, r *http.Request) {
			panic(http.ErrAbortHandler)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			e := loadEvent(t, "post-json.json")
			e.Body = `{"secret":"do-not-log"}`
			ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-panic"})
			res, err := Handler(tt.handler)(ctx, e)
			if err != nil {
				t.Fatalf("Handler returned error %v; want nil", err)
			}
			eq(t, "status", res.StatusCode, http.StatusInternalServerError)
			eq(t, "headers", res.Headers, map[string]string{"Content-Type": "application/json"})
			wantErrorBody(t, res.Body, "internal", "internal error", "req-panic")

			out := logs.String()
			if !tt.logged {
				if out != "" {
					t.Errorf("unexpected log: %s", out)
				}
				return
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &rec); err != nil {
				t.Fatalf("log not JSON: %v: %s", err, out)
			}
			eq(t, "level", rec["level"], "ERROR")
			eq(t, "request_id", rec["request_id"], "req-panic")
			eq(t, "path", rec["path"], "/items")
			if strings.Contains(out, "do-not-log") {
				t.Error("request body leaked into log")
			}
		})
	}
}

func TestLambdaContextReachesHandler(t *testing.T) {
	lc := &lambdacontext.LambdaContext{AwsRequestID: "abc-123", InvokedFunctionArn: "arn:aws:lambda:us-east-2:123456789012:function:f"}
	ctx, cancel := context.WithCancel(lambdacontext.NewContext(context.Background(), lc))
	defer cancel()

	var got *lambdacontext.LambdaContext
	var gotCtxErr error
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = lambdacontext.FromContext(r.Context())
		cancel()
		gotCtxErr = r.Context().Err()
		io.WriteString(w, got.AwsRequestID)
	})
	res, err := Handler(h)(ctx, loadEvent(t, "get.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got != lc {
		t.Fatalf("lambda context = %+v, want %+v", got, lc)
	}
	if !errors.Is(gotCtxErr, context.Canceled) {
		t.Errorf("request context not derived from ctx: Err() = %v", gotCtxErr)
	}
	eq(t, "body", res.Body, "abc-123")
}

func TestIsTextual(t *testing.T) {
	tests := []struct {
		ct   string
		body string
		want bool
	}{
		{"text/plain", "x", true},
		{"TEXT/HTML; charset=UTF-8", "x", true},
		{"application/json", "{}", true},
		{"application/xml", "<a/>", true},
		{"image/svg+xml", "<svg/>", true},
		{"application/vnd.api+json", "{}", true},
		{"", "plain", true},
		{"", "\xff", false},
		{"application/octet-stream", "x", false},
		{"image/png", "x", false},
		{"application/json", "\xff", false},
		{"text/plain; bad=", "x", true}, // unparsable params: fall back to the media type
	}
	for _, tt := range tests {
		if got := isTextual(tt.ct, []byte(tt.body)); got != tt.want {
			t.Errorf("isTextual(%q, %q) = %v, want %v", tt.ct, tt.body, got, tt.want)
		}
	}
}

func FuzzRequest(f *testing.F) {
	f.Add("GET", "/items/42", "a=1&b=2", "", false)
	f.Add("POST", "/items", "", `{"a":1}`, false)
	f.Add("PUT", "/blobs/a%2Fb", "", "AAH/gEJD", true)
	f.Add("POST", "/upload", "", "!!! not base64 !!!", true)
	f.Add("", "", "", "", false)
	f.Add("GET /", "//evil.example/x", "#frag", "", false)
	f.Add("DELETE", "/a%zz", "x=%zz", "\xff\x00", false)
	f.Add("HEAD", "relative", "q", "", true)

	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		w.Write(b)
	})
	handler := Handler(h)
	f.Fuzz(func(t *testing.T, method, rawPath, rawQuery, body string, isBase64 bool) {
		e := events.APIGatewayV2HTTPRequest{
			Version:         "2.0",
			RouteKey:        "$default",
			RawPath:         rawPath,
			RawQueryString:  rawQuery,
			Headers:         map[string]string{"host": "api.example.com", "content-type": "application/octet-stream"},
			Body:            body,
			IsBase64Encoded: isBase64,
		}
		e.RequestContext.HTTP.Method = method
		e.RequestContext.HTTP.SourceIP = "192.0.2.1"

		r, err := Request(context.Background(), e)
		if err == nil {
			if r.URL == nil || !strings.HasPrefix(r.URL.Path, "/") {
				t.Fatalf("bad URL %v for path %q", r.URL, rawPath)
			}
			got, _ := io.ReadAll(r.Body)
			if int64(len(got)) != r.ContentLength {
				t.Fatalf("ContentLength %d != len(body) %d", r.ContentLength, len(got))
			}
		}

		res, herr := handler(context.Background(), e)
		checkFuzzAnswer(t, err, res, res.StatusCode, res.Body, herr)
	})
}

// checkFuzzAnswer fails t unless the handler answered an event without an error of
// its own: 400 if converting the event failed with convErr, else 200 (what the fuzzed
// handler answers), in a response that encodes as JSON.
func checkFuzzAnswer(t *testing.T, convErr error, res any, status int, body string, herr error) {
	t.Helper()
	if herr != nil {
		t.Fatalf("handler returned error %v", herr)
	}
	switch {
	case convErr != nil && status != http.StatusBadRequest:
		t.Fatalf("invalid request answered %d", status)
	case convErr == nil && status != http.StatusOK:
		t.Fatalf("valid request answered %d: %s", status, body)
	}
	if _, merr := json.Marshal(res); merr != nil {
		t.Fatalf("response not JSON-encodable: %v", merr)
	}
}

func wantErrorBody(t *testing.T, body, code, message, reqID string) {
	t.Helper()
	want := `{"error":{"code":"` + code + `","message":"` + message + `","request_id":"` + reqID + `"}}`
	if body != want {
		t.Errorf("error body = %s\nwant         %s", body, want)
	}
}

// eqBody fails t unless an answer's body is want, or, when it must be base64, decodes
// to wantDecoded.
func eqBody(t *testing.T, body string, wantBase64 bool, want string, wantDecoded []byte) {
	t.Helper()
	if !wantBase64 {
		eq(t, "body", body, want)
		return
	}
	got, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		t.Fatalf("body not base64: %v", err)
	}
	eq(t, "decoded body", got, wantDecoded)
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}
