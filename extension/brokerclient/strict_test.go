package brokerclient_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
)

// rawClient is a client of url signing with fixed credentials (a raw test server checks
// no signature).
func rawClient(t *testing.T, url string, edit ...func(*brokerclient.Config)) *brokerclient.Client {
	t.Helper()
	cfg := brokerclient.Config{
		BaseURL: url, Audience: "test-audience", Region: "us-east-1", BaseDelay: time.Millisecond, MaxDelay: time.Millisecond,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "secret", SessionToken: "token"}, nil
		}),
	}
	return build(t, cfg, edit...)
}

const goodCredential = `"lease_id":"6f1c2b8e-3a57-4d1e-9f5a-2b7c9d0e1f23","database":"orders","role":"readonly",` +
	`"password":"pw","host":"db","port":5432,"dbname":"orders","sslmode":"require","issued_at":"2026-11-22T08:00:00Z",` +
	`"expires_at":"2026-11-22T08:15:00Z","max_expires_at":"2026-11-22T09:00:00Z","renewable":true`

// An answer that two JSON readers could read differently is a failed call: the
// credential in it is never returned, and the call is not retried (the broker answered;
// asking again would issue another lease).
func TestStrictAnswers(t *testing.T) {
	for _, tc := range []struct{ name, body string }{
		{"duplicate key", `{"username":"eph_a",` + goodCredential + `,"username":"eph_b"}`},
		{"case-variant key", `{"Username":"eph_a",` + goodCredential + `}`},
		{"case-variant pair", `{"username":"eph_a","USERNAME":"eph_b",` + goodCredential + `}`},
		{"NUL in a string", `{"username":"eph_a\u0000",` + goodCredential + `}`},
		{"trailing data", `{"username":"eph_a",` + goodCredential + `} {}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			cred, err := rawClient(t, srv.URL).Issue(context.Background(), "orders", "readonly", 0)
			if err == nil || cred != nil {
				t.Fatalf("accepted: %+v", cred)
			}
			if !errors.Is(err, api.ErrStrictJSON) || brokerclient.Retryable(err) {
				t.Fatalf("err %v (retryable %v)", err, brokerclient.Retryable(err))
			}
			if strings.Contains(err.Error(), "pw") {
				t.Fatalf("the error quotes the answer: %v", err)
			}
			if n := calls.Load(); n != 1 {
				t.Fatalf("%d calls", n)
			}
		})
	}
	// A field a newer broker adds is ignored.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"username":"eph_a",`+goodCredential+`,"region":"eu-west-1"}`)
	}))
	defer srv.Close()
	if cred, err := rawClient(t, srv.URL).Issue(context.Background(), "orders", "readonly", 0); err != nil || cred.Username != "eph_a" {
		t.Fatalf("an added field: %+v %v", cred, err)
	}
}

// An error document that is not strict JSON still fails the call with its status, but
// its code is not trusted.
func TestStrictErrorDocuments(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, `{"error":{"code":"access_denied","code":"not_found","message":"m","request_id":"r"}}`)
	}))
	defer srv.Close()
	_, err := rawClient(t, srv.URL).Issue(context.Background(), "orders", "readonly", 0)
	if brokerclient.StatusOf(err) != 403 || api.CodeOf(err) != "" || brokerclient.Retryable(err) {
		t.Fatalf("err %v", err)
	}
}

// A broker that answers 307 to another server: the other server receives nothing (the
// proof in the body must reach the configured broker only), and the call fails at once,
// not retried: a redirect is a configuration error, not an outage.
func TestRedirectNotFollowed(t *testing.T) {
	var other atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		other.Add(1)
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"username":"eph_a",`+goodCredential+`}`)
	}))
	defer elsewhere.Close()
	var calls atomic.Int32
	broker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer broker.Close()
	for _, call := range []func(c *brokerclient.Client) error{
		func(c *brokerclient.Client) error {
			_, err := c.Issue(context.Background(), "orders", "readonly", 0)
			return err
		},
		func(c *brokerclient.Client) error {
			_, err := c.Renew(context.Background(), "6f1c2b8e-3a57-4d1e-9f5a-2b7c9d0e1f23", 0)
			return err
		},
		func(c *brokerclient.Client) error {
			return c.Revoke(context.Background(), "6f1c2b8e-3a57-4d1e-9f5a-2b7c9d0e1f23")
		},
		func(c *brokerclient.Client) error {
			_, err := c.AssumeAWS(context.Background(), "reports-read", 0)
			return err
		},
	} {
		calls.Store(0)
		err := call(rawClient(t, broker.URL))
		var be *brokerclient.Error
		if !errors.As(err, &be) || be.Status != http.StatusTemporaryRedirect || brokerclient.Retryable(err) {
			t.Fatalf("err %v", err)
		}
		if !strings.HasPrefix(be.Location, elsewhere.URL) || !strings.Contains(err.Error(), "not followed") {
			t.Errorf("the error does not name the redirect: %v", err)
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("%d attempts at the broker, want 1", n)
		}
	}
	if n := other.Load(); n != 0 {
		t.Fatalf("the redirect target received %d requests", n)
	}
}

// Plain http is refused unless the host is a loopback address.
func TestBaseURLMustBeHTTPS(t *testing.T) {
	creds := aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return aws.Credentials{}, nil })
	for url, ok := range map[string]bool{
		"https://abc.execute-api.eu-west-1.amazonaws.com/prod": true,
		"http://127.0.0.1:8080":                                true,
		"http://127.3.2.1":                                     true,
		"http://[::1]:8080":                                    true,
		"http://localhost:8080":                                true,
		"http://abc.execute-api.eu-west-1.amazonaws.com":       false,
		"http://10.0.0.5:8080":                                 false,
		"http://localhost.evil.example":                        false,
	} {
		_, err := brokerclient.New(brokerclient.Config{BaseURL: url, Audience: "a", Region: "us-east-1", Credentials: creds})
		if ok != (err == nil) || (!ok && !errors.Is(err, brokerclient.ErrInsecureURL)) {
			t.Errorf("%s: %v", url, err)
		}
	}
}

// A 503 with Retry-After waits at least that long before the next attempt (up to
// MaxDelay).
func TestRetryAfterHonoured(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `{"error":{"code":"database_unavailable","message":"down","request_id":"r"}}`)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"username":"eph_a",`+goodCredential+`}`)
	}))
	defer srv.Close()
	c := rawClient(t, srv.URL, func(cfg *brokerclient.Config) { cfg.MaxDelay = 5 * time.Second })
	var s sleeps
	c.SetSleep(s.sleep)
	if _, err := c.Issue(context.Background(), "orders", "readonly", 0); err != nil {
		t.Fatal(err)
	}
	if len(s.d) != 1 || s.d[0] < 2*time.Second {
		t.Fatalf("waits %v, want one of at least 2s", s.d)
	}
}
