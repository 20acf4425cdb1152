package agent_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
)

// A broker answer that two JSON readers could read differently is a failed fetch: the
// agent never caches or serves the credential in it.
func TestAmbiguousAnswerIsNeverServed(t *testing.T) {
	const fields = `"lease_id":"6f1c2b8e-3a57-4d1e-9f5a-2b7c9d0e1f23","database":"orders","role":"readonly","password":"pw",` +
		`"host":"db","port":5432,"dbname":"orders","sslmode":"require","issued_at":"2026-11-22T08:00:00Z",` +
		`"expires_at":"2099-11-22T08:15:00Z","max_expires_at":"2099-11-22T09:00:00Z","renewable":true`
	for name, body := range map[string]string{
		"duplicate key":    `{"username":"eph_a",` + fields + `,"username":"eph_b"}`,
		"case-variant key": `{"USERNAME":"eph_a",` + fields + `}`,
		"NUL in a string":  `{"username":"eph_\u0000a",` + fields + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, body)
			}))
			defer srv.Close()
			bc, err := brokerclient.New(brokerclient.Config{BaseURL: srv.URL, Audience: "a", Region: "us-east-1",
				Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
					return aws.Credentials{AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "s", SessionToken: "t"}, nil
				})})
			if err != nil {
				t.Fatal(err)
			}
			a, err := agent.New(bc, []config.Credential{{Name: "orders", Database: "orders", Role: "readonly"}},
				agent.Options{Lazy: true, InitTimeout: time.Second, FetchWait: 100 * time.Millisecond, RetryBase: time.Hour, RetryMax: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			defer a.RevokeAll(context.Background())
			if err := a.Start(context.Background()); !errors.Is(err, api.ErrStrictJSON) || errors.Is(err, agent.ErrUnavailable) {
				t.Fatalf("Start: %v", err)
			}
			if c, err := a.Get(context.Background(), "orders", false); err == nil || c.Username != "" {
				t.Fatalf("served %v (%v)", c, err)
			}
			if a.Ready() {
				t.Fatal("ready with nothing cached")
			}
		})
	}
}
