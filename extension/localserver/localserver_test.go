package localserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
	"github.com/ephemera-sh/ephemera/extension/localapi"
	"github.com/ephemera-sh/ephemera/extension/localserver"
)

const token = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN"

// staticSource serves one fixed credential, or a fixed error.
type staticSource struct {
	mu      sync.Mutex
	cred    agent.Credential
	err     error
	ready   bool
	refresh []bool
}

func (s *staticSource) Get(_ context.Context, name string, refresh bool) (agent.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh = append(s.refresh, refresh)
	return fixed(s.cred, s.cred.Name, s.err, name)
}

// fixed is what a source of one value answers for name: its error if it has one,
// else the value, named valueName, or agent.ErrUnknown for another name.
func fixed[T any](value T, valueName string, err error, name string) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	if name != valueName {
		return zero, fmt.Errorf("%w: %q", agent.ErrUnknown, name)
	}
	return value, nil
}

func (s *staticSource) Ready() bool { s.mu.Lock(); defer s.mu.Unlock(); return s.ready }

// asked returns the refresh flag of every call so far.
func (s *staticSource) asked() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.refresh...)
}

func testCredential() agent.Credential {
	return agent.Credential{Name: "orders", Credential: api.Credential{
		LeaseID: "6f1c2b8e-3a57-4d1e-9f5a-2b7c9d0e1f23", Database: "orders", Role: "readonly",
		Username: "eph_readonly_x1", Password: `p'w\d"`, Host: "db.internal", Port: 5432, DBName: "orders",
		SSLMode: "require", ExpiresAt: time.Date(2026, 11, 22, 8, 15, 0, 0, time.UTC),
	}}
}

func start(t *testing.T, src localserver.Source) *localserver.Server {
	t.Helper()
	s, err := localserver.Start(localserver.Config{Port: 0, Token: token, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// get sends GET path to the server, with the token unless tok is "-", and Host host
// unless empty.
func get(t *testing.T, s *localserver.Server, path, tok, host string) answer {
	t.Helper()
	a, err := fetch(s, path, tok, host)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fetch is get without testing.T, for other goroutines.
func fetch(s *localserver.Server, path, tok, host string) (answer, error) {
	header := http.Header{}
	if tok != "-" {
		header.Set(localapi.HeaderToken, tok)
	}
	return send(s, path, header, host)
}

// send sends GET path to the server with the given headers, and Host host unless
// empty, and decodes the answer. It also checks the headers every answer carries.
func send(s *localserver.Server, path string, header http.Header, host string) (answer, error) {
	req, err := http.NewRequest(http.MethodGet, s.URL()+path, nil)
	if err != nil {
		return answer{}, err
	}
	for k, vs := range header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if err := json.Unmarshal(raw, &a.body); err != nil {
		return a, fmt.Errorf("body %q: %w", raw, err)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		return a, fmt.Errorf("Cache-Control %q", cc)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		return a, fmt.Errorf("Content-Type %q", ct)
	}
	return a, nil
}

func errCode(a answer) string {
	e, _ := a.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func TestCredential(t *testing.T) {
	src := &staticSource{cred: testCredential(), ready: true}
	s := start(t, src)
	a := get(t, s, "/v1/credentials/orders", token, "")
	if a.status != 200 {
		t.Fatalf("status %d %s", a.status, a.raw)
	}
	var r localapi.Credential
	if err := api.Unmarshal([]byte(a.raw), &r); err != nil {
		t.Fatal(err)
	}
	c := testCredential()
	want := localapi.Credential{
		Name: "orders", Username: c.Username, Password: c.Password, Host: c.Host, Port: 5432, DBName: "orders",
		SSLMode: "require", LeaseID: c.LeaseID, ExpiresAt: c.ExpiresAt,
		DSN: `host='db.internal' port='5432' dbname='orders' user='eph_readonly_x1' password='p\'w\\d"' sslmode='require'`,
	}
	if r != want {
		t.Fatalf("got  %+v\nwant %+v", r, want)
	}
	if len(a.body) != 10 {
		t.Errorf("fields %v", a.body)
	}
	if !strings.Contains(a.raw, `"expires_at":"2026-11-22T08:15:00Z"`) {
		t.Errorf("expires_at not RFC 3339 UTC: %s", a.raw)
	}
	if b := get(t, s, "/v1/credentials/orders?refresh=true", token, ""); b.status != 200 {
		t.Fatalf("refresh: %d", b.status)
	}
	if b := get(t, s, "/v1/credentials/orders?refresh=maybe", token, ""); b.status != 400 {
		t.Fatalf("refresh=maybe: %d", b.status)
	}
	if got := fmt.Sprint(src.asked()); got != "[false true]" {
		t.Errorf("refresh flags %v", got)
	}
}

func TestToken(t *testing.T) {
	src := &staticSource{cred: testCredential(), ready: true}
	s := start(t, src)
	for _, tc := range []struct{ name, tok string }{
		{"missing", "-"}, {"empty", ""}, {"wrong", token + "x"}, {"prefix", token[:10]}, {"other", "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := get(t, s, "/v1/credentials/orders", tc.tok, "")
			if a.status != 401 || errCode(a) != "unauthorized" || strings.Contains(a.raw, "eph_") {
				t.Fatalf("status %d %s", a.status, a.raw)
			}
		})
	}
	// Unknown names are not revealed to callers without the token.
	if a := get(t, s, "/v1/credentials/nope", "-", ""); a.status != 401 {
		t.Fatalf("unknown name without token: %d", a.status)
	}
	// Two token headers are refused.
	req, _ := http.NewRequest(http.MethodGet, s.URL()+"/v1/credentials/orders", nil)
	req.Header.Add(localapi.HeaderToken, token)
	req.Header.Add(localapi.HeaderToken, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("two tokens: %d", resp.StatusCode)
	}
	if n := len(src.asked()); n != 0 {
		t.Fatalf("the source was asked %d times without a valid token", n)
	}
}

func TestHost(t *testing.T) {
	s := start(t, &staticSource{cred: testCredential(), ready: true})
	_, port, _ := net.SplitHostPort(s.Addr())
	other := strconv.Itoa(func() int { p, _ := strconv.Atoi(port); return p%60000 + 1 }())
	for _, host := range []string{"evil.example:" + port, "evil.example", "127.0.0.1", "127.0.0.1:" + other, "localhost", "[::1]:" + port, "127.0.0.2:" + port} {
		for _, path := range []string{"/v1/credentials/orders", "/v1/health"} {
			a := get(t, s, path, token, host)
			if a.status != http.StatusMisdirectedRequest || errCode(a) != "misdirected_request" {
				t.Errorf("Host %q %s: status %d %s", host, path, a.status, a.raw)
			}
		}
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LocalHost:" + port} {
		if a := get(t, s, "/v1/credentials/orders", token, host); a.status != 200 {
			t.Errorf("Host %q: status %d", host, a.status)
		}
	}
}

// sourceError is an error of a source and the status and error code the server
// answers it with.
type sourceError struct {
	name   string
	err    error
	status int
	code   string
}

// sourceErrors are the errors a source may return for name, the broker having
// refused action, answered alike for database credentials and AWS sessions.
func sourceErrors(name, action string) []sourceError {
	return []sourceError{
		{"unknown", fmt.Errorf("%w: %q", agent.ErrUnknown, "x"), 404, "not_found"},
		{"not ready", fmt.Errorf("%w: %q", agent.ErrNotReady, name), 503, "not_ready"},
		{"closed", agent.ErrClosed, 503, "not_ready"},
		{"unavailable", fmt.Errorf("%w: %w", agent.ErrUnavailable, errors.New("dial tcp: connection refused")), 503, "broker_unavailable"},
		{"refused", fmt.Errorf("agent: %w", &brokerclient.Error{Status: 403, API: &api.Error{Code: api.CodeAccessDenied, Message: "no policy permits " + action}}), 502, "broker_refused"},
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range sourceErrors("orders", "issue") {
		t.Run(tc.name, func(t *testing.T) {
			s := start(t, &staticSource{err: tc.err})
			a := get(t, s, "/v1/credentials/orders", token, "")
			if a.status != tc.status || errCode(a) != tc.code {
				t.Fatalf("status %d %s", a.status, a.raw)
			}
		})
	}
	s := start(t, &staticSource{cred: testCredential()})
	if a := get(t, s, "/v1/credentials/other", token, ""); a.status != 404 {
		t.Fatalf("unknown name: %d", a.status)
	}
	if a := get(t, s, "/v2/x", token, ""); a.status != 404 {
		t.Fatalf("unknown path: %d", a.status)
	}
	resp, err := http.Post(s.URL()+"/v1/credentials/orders", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET" {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func TestHealth(t *testing.T) {
	src := &staticSource{cred: testCredential()}
	s := start(t, src)
	a := get(t, s, "/v1/health", "-", "")
	if a.status != 200 || a.raw != "{\"ready\":false}\n" {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	src.mu.Lock()
	src.ready = true
	src.mu.Unlock()
	if a := get(t, s, "/v1/health", "-", ""); a.raw != "{\"ready\":true}\n" {
		t.Fatalf("%s", a.raw)
	}
}

// With the real agent: a read during INIT waits for it; a failed INIT answers 503.
func TestWaitsForReadinessDuringInit(t *testing.T) {
	b := brokertest.Start(t)
	bc, err := brokerclient.New(brokerclient.Config{BaseURL: b.URL(), Audience: brokertest.Audience,
		Region: brokertest.Region, Credentials: b.CredentialsProvider()})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(bc, []config.Credential{{Name: "orders", Database: "orders", Role: "readonly"}}, agent.Options{InitTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.RevokeAll(context.Background()) }()
	s := start(t, a)
	release := b.Hold()
	go func() { _ = a.Start(context.Background()) }()
	for end := time.Now().Add(10 * time.Second); b.InFlight() == 0 && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if h := get(t, s, "/v1/health", "-", ""); h.raw != "{\"ready\":false}\n" {
		t.Fatalf("health during INIT: %s", h.raw)
	}
	got := make(chan answer, 1)
	fetchErr := make(chan error, 1)
	go func() {
		a, err := fetch(s, "/v1/credentials/orders", token, "")
		fetchErr <- err
		got <- a
	}()
	time.Sleep(30 * time.Millisecond)
	release()
	if err := <-fetchErr; err != nil {
		t.Fatal(err)
	}
	ans := <-got
	if ans.status != 200 || ans.body["username"] == "" {
		t.Fatalf("read during INIT: %d %s", ans.status, ans.raw)
	}
	if h := get(t, s, "/v1/health", "-", ""); h.raw != "{\"ready\":true}\n" {
		t.Fatalf("health after INIT: %s", h.raw)
	}
	if n := b.Count("issue"); n != 1 {
		t.Fatalf("%d issues", n)
	}
	if ans := get(t, s, "/v1/credentials/missing", token, ""); ans.status != 404 {
		t.Fatalf("unknown name: %d", ans.status)
	}
}

func TestNotReadyAfterFailedInit(t *testing.T) {
	b := brokertest.Start(t)
	b.SetDown(true)
	bc, err := brokerclient.New(brokerclient.Config{BaseURL: b.URL(), Audience: brokertest.Audience,
		Region: brokertest.Region, Credentials: b.CredentialsProvider(), BaseDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(bc, []config.Credential{{Name: "orders", Database: "orders", Role: "readonly"}},
		agent.Options{InitTimeout: 2 * time.Second, Lazy: true, RetryBase: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.RevokeAll(context.Background()) }()
	s := start(t, a)
	if err := a.Start(context.Background()); err == nil {
		t.Fatal("Start succeeded against a broker that is down")
	}
	ans := get(t, s, "/v1/credentials/orders", token, "")
	if ans.status != 503 || errCode(ans) != "not_ready" {
		t.Fatalf("%d %s", ans.status, ans.raw)
	}
}

// The server listens on 127.0.0.1 only: the machine's other addresses refuse.
func TestLoopbackOnly(t *testing.T) {
	s := start(t, &staticSource{cred: testCredential(), ready: true})
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") {
		t.Fatalf("Addr %s", s.Addr())
	}
	_, port, _ := net.SplitHostPort(s.Addr())
	targets := []string{"::1"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		targets = append(targets, ipn.IP.String())
	}
	t.Logf("dialing %v", targets)
	for _, ip := range targets {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("dialing %s:%s succeeded", ip, port)
		}
	}
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		t.Fatalf("dialing %s: %v", s.Addr(), err)
	}
	conn.Close()
}

func TestListenRejects(t *testing.T) {
	src := &staticSource{}
	for _, cfg := range []localserver.Config{{Source: src}, {Token: token}, {Source: src, Token: token, Port: 70000}} {
		if _, err := localserver.Listen(cfg); err == nil {
			t.Errorf("Listen(%+v) succeeded", cfg)
		}
	}
	s := start(t, src)
	_, port, _ := net.SplitHostPort(s.Addr())
	p, _ := strconv.Atoi(port)
	if _, err := localserver.Listen(localserver.Config{Source: src, Token: token, Port: p}); err == nil {
		t.Error("a second server bound the same port")
	}
}

func TestDSN(t *testing.T) {
	got := localserver.DSN(api.Credential{Host: "h", Port: 1, DBName: "d b", Username: "u", Password: `a'b\c d`})
	want := `host='h' port='1' dbname='d b' user='u' password='a\'b\\c d'`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// TestCredentialAnswerFollowsRotation: a read of an unchanged credential is
// answered from the encoded answer the server keeps, and a rotated one (new
// lease, user and password) is answered anew at once, never with the old.
func TestCredentialAnswerFollowsRotation(t *testing.T) {
	src := &staticSource{cred: testCredential(), ready: true}
	s := start(t, src)
	first := get(t, s, "/v1/credentials/orders", token, "")
	if again := get(t, s, "/v1/credentials/orders", token, ""); again.status != 200 || again.raw != first.raw {
		t.Fatalf("second read: %d %s, want the first answer", again.status, again.raw)
	}
	src.mu.Lock()
	src.cred.LeaseID, src.cred.Username, src.cred.Password = "0b9d7a61-1c2e-4f3a-8b4c-5d6e7f809a1b", "eph_readonly_x2", "rotated"
	src.mu.Unlock()
	after := get(t, s, "/v1/credentials/orders", token, "")
	if after.status != 200 || after.body["username"] != "eph_readonly_x2" || after.body["password"] != "rotated" ||
		after.body["lease_id"] != "0b9d7a61-1c2e-4f3a-8b4c-5d6e7f809a1b" || !strings.Contains(after.raw, "user='eph_readonly_x2'") {
		t.Fatalf("after rotation: %d %s", after.status, after.raw)
	}
}
