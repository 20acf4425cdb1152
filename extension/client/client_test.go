package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/ephemera-sh/ephemera/extension/localapi"
)

const testToken = "session-token-never-print"

// fakeExtension mimics the extension's local API: it checks the token,
// answers 503 for the first notReady requests, counts ?refresh=true, and
// serves credentials from a map.
type fakeExtension struct {
	*httptest.Server

	mu        sync.Mutex
	creds     map[string]Credential
	notReady  int // requests to answer with 503 before serving
	requests  int
	refreshes int
	tokens    []string
}

func newFakeExtension(t *testing.T) *fakeExtension {
	f := &fakeExtension{creds: map[string]Credential{"orders": testCredential()}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// cannedErrors are the error documents the fake extension answers for these names.
var cannedErrors = map[string]struct {
	status    int
	code, msg string
}{
	"misdirected": {http.StatusMisdirectedRequest, "wrong_host", "host refused"},
	"broken":      {http.StatusInternalServerError, "internal", "boom\n\t"},
	"nul":         {http.StatusInternalServerError, "internal", "boom\x00"},
}

// cannedBodies are the malformed 200 bodies the fake extension answers for these
// names: a duplicate key, a key in the wrong case, truncated JSON holding a secret.
var cannedBodies = map[string]string{
	"duplicate": `{"name":"duplicate","username":"u","password":"p","username":"v","expires_at":"2026-11-17T03:15:00Z"}`,
	"case":      `{"name":"case","Username":"u","password":"p","expires_at":"2026-11-17T03:15:00Z"}`,
	"garbage":   `{"username": "u", "password": "` + secret + `"`,
}

func (f *fakeExtension) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	f.tokens = append(f.tokens, r.Header.Get(tokenHeader))
	fail := func(status int, code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		var body struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		body.Error.Code, body.Error.Message = code, msg
		json.NewEncoder(w).Encode(body)
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/v1/credentials/")
	switch {
	case !ok || r.Method != http.MethodGet:
		fail(http.StatusNotFound, "not_found", "no such route")
		return
	case r.Header.Get(tokenHeader) != testToken:
		fail(http.StatusUnauthorized, "unauthorized", "missing or wrong token")
		return
	case cannedErrors[name].status != 0:
		e := cannedErrors[name]
		fail(e.status, e.code, e.msg)
		return
	case cannedBodies[name] != "":
		w.Write([]byte(cannedBodies[name]))
		return
	case f.notReady > 0:
		f.notReady--
		fail(http.StatusServiceUnavailable, "not_ready", "broker unreachable")
		return
	}
	c, ok := f.creds[name]
	if !ok {
		fail(http.StatusNotFound, "not_found", "no credential "+name)
		return
	}
	if r.URL.Query().Get("refresh") == "true" {
		f.refreshes++
		c.LeaseID = fmt.Sprintf("lease-%d", f.refreshes)
		f.creds[name] = c
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(localapi.Credential{
		Name: name, Username: c.Username, Password: c.Password, Host: c.Host, Port: c.Port,
		DBName: c.DBName, SSLMode: c.SSLMode, DSN: c.DSN, LeaseID: c.LeaseID, ExpiresAt: c.ExpiresAt,
	})
}

func (f *fakeExtension) counts() (requests, refreshes int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests, f.refreshes
}

func TestClientCredentials(t *testing.T) {
	f := newFakeExtension(t)
	c := New(WithBaseURL(f.URL), WithToken(testToken))
	got, err := c.Credentials(context.Background(), "orders")
	if err != nil {
		t.Fatal(err)
	}
	want := testCredential()
	if *got != want {
		t.Errorf("got  %#v\nwant %#v", got, want)
	}
	if got.Password != secret || !strings.Contains(got.DSN, secret) {
		t.Error("the secret fields were not decoded")
	}
	if f.tokens[0] != testToken {
		t.Errorf("token header = %q", f.tokens[0])
	}
}

func TestClientNotReadyThenReady(t *testing.T) {
	f := newFakeExtension(t)
	f.notReady = 1
	c := New(WithBaseURL(f.URL), WithToken(testToken))
	_, err := c.Credentials(context.Background(), "orders")
	var e *Error
	if !errors.Is(err, ErrNotReady) || !errors.As(err, &e) || e.StatusCode != 503 || e.Code != "not_ready" {
		t.Fatalf("first call: err = %v, want ErrNotReady", err)
	}
	if _, err := c.Credentials(context.Background(), "orders"); err != nil {
		t.Fatalf("second call: %v", err)
	}
}

func TestClientRefresh(t *testing.T) {
	f := newFakeExtension(t)
	c := New(WithBaseURL(f.URL), WithToken(testToken))
	ctx := context.Background()
	if _, err := c.Credentials(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	got, err := c.Refresh(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if got.LeaseID != "lease-1" {
		t.Errorf("lease = %q, want the refreshed lease-1", got.LeaseID)
	}
	if req, ref := f.counts(); req != 2 || ref != 1 {
		t.Errorf("requests, refreshes = %d, %d; want 2, 1", req, ref)
	}
}

func TestClientErrors(t *testing.T) {
	f := newFakeExtension(t)
	ctx := context.Background()
	good := New(WithBaseURL(f.URL), WithToken(testToken))
	tests := []struct {
		name   string
		client *Client
		cred   string
		is     error
		text   string
	}{
		{"wrong token", New(WithBaseURL(f.URL), WithToken("wrong")), "orders", ErrUnauthorized,
			`client: credential "orders": 401 Unauthorized: unauthorized: missing or wrong token`},
		{"no token", New(WithBaseURL(f.URL), WithToken("")), "orders", ErrUnauthorized,
			"client: no token (AWS_SESSION_TOKEN is empty; use WithToken): client: unauthorized"},
		{"unknown name", good, "billing", ErrNotFound,
			`client: credential "billing": 404 Not Found: not_found: no credential billing`},
		{"misdirected", good, "misdirected", ErrMisdirected,
			`client: credential "misdirected": 421 Misdirected Request: wrong_host: host refused`},
		{"server error", good, "broken", nil,
			`client: credential "broken": 500 Internal Server Error: internal: boom`},
		{"malformed body", good, "garbage", nil,
			`client: credential "garbage": response is not a credential object`},
		{"duplicate key", good, "duplicate", nil,
			`client: credential "duplicate": response is not a credential object`},
		{"case variant of a key", good, "case", nil,
			`client: credential "case": response is not a credential object`},
		{"NUL in an error document", good, "nul", nil,
			`client: credential "nul": 500 Internal Server Error`},
		{"empty name", good, "", nil, "client: empty credential name"},
		{"bad port", New(WithPort(70000), WithToken(testToken)), "orders", nil,
			"client: invalid port (set EPHEMERA_PORT to 1-65535, or use WithPort)"},
		{"bad base URL", New(WithBaseURL("127.0.0.1:1"), WithToken(testToken)), "orders", nil,
			"client: base URL must be an absolute http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.client.Credentials(ctx, tt.cred)
			if err == nil {
				t.Fatalf("got %v, want an error", got)
			}
			if err.Error() != tt.text {
				t.Errorf("error\n got %s\nwant %s", err, tt.text)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
			}
			for _, s := range []string{secret, testToken} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error shows a secret: %v", err)
				}
			}
		})
	}
}

func TestClientUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	_, err := New(WithBaseURL(url), WithToken(testToken)).Credentials(context.Background(), "orders")
	if err == nil || !strings.HasPrefix(err.Error(), `client: credential "orders": `) || strings.Contains(err.Error(), testToken) {
		t.Errorf("err = %v", err)
	}
}

func TestClientContextCanceled(t *testing.T) {
	f := newFakeExtension(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := New(WithBaseURL(f.URL), WithToken(testToken)).Credentials(ctx, "orders")
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

func TestClientNeverFollowsRedirects(t *testing.T) {
	var leaked sync.Map
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Store("token", r.Header.Get(tokenHeader))
	}))
	defer elsewhere.Close()
	redirect := httptest.NewServer(http.RedirectHandler(elsewhere.URL, http.StatusFound))
	defer redirect.Close()
	_, err := New(WithBaseURL(redirect.URL), WithToken(testToken), WithHTTPClient(&http.Client{})).
		Credentials(context.Background(), "orders")
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != http.StatusFound {
		t.Errorf("err = %v, want a 302 *Error", err)
	}
	if _, ok := leaked.Load("token"); ok {
		t.Error("the client followed the redirect and sent its token elsewhere")
	}
}

func TestNewFromEnvironment(t *testing.T) {
	t.Setenv(EnvToken, testToken)
	t.Setenv(EnvPort, "")
	if c := New(); c.baseURL != "http://127.0.0.1:7411" || c.token != testToken || c.err != nil {
		t.Errorf("defaults: %s %v", c.baseURL, c.err)
	}
	t.Setenv(EnvPort, "9001")
	if c := New(); c.baseURL != "http://127.0.0.1:9001" {
		t.Errorf("EPHEMERA_PORT=9001: %s", c.baseURL)
	}
	if c := New(WithPort(9002)); c.baseURL != "http://127.0.0.1:9002" {
		t.Errorf("WithPort beats the environment: %s", c.baseURL)
	}
	t.Setenv(EnvPort, "not-a-port")
	if c := New(); c.err == nil {
		t.Error("EPHEMERA_PORT=not-a-port: no error")
	}
}

func TestPackageCredentialsUsesEnvironment(t *testing.T) {
	// The default client is made once per process; the test resets it so
	// that it sees this test's environment.
	f := newFakeExtension(t)
	port := f.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	t.Setenv(EnvToken, testToken)
	t.Setenv(EnvPort, strconv.Itoa(int(port)))
	defaultClient = sync.OnceValue(func() *Client { return New() }) // -count=N: see the environment again
	got, err := Credentials(context.Background(), "orders")
	if err != nil || got.Username != "eph_readonly_abc" {
		t.Fatalf("Credentials = %v, %v", got, err)
	}
}
