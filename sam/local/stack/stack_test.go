package stack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/observe"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
)

// TestStackIssuesAWorkingCredential starts the default stack and walks one
// credential through it: a proof signed by a registered workload, the
// broker's answer, a login with the credential, the audit line.
func TestStackIssuesAWorkingCredential(t *testing.T) {
	out := &observe.Buffer{}
	var served int
	var mu sync.Mutex
	s := stack.StartTB(t, stack.Options{
		Output:    out,
		ReapEvery: time.Hour, // started and stopped, never due
		Middleware: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				served++
				mu.Unlock()
				h.ServeHTTP(w, r)
			})
		},
	})
	if !strings.HasPrefix(s.BrokerURL, "http://127.0.0.1:") {
		t.Fatalf("BrokerURL = %q, want http://127.0.0.1:PORT", s.BrokerURL)
	}

	resp, err := http.Get(s.BrokerURL + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("health: %d", resp.StatusCode)
	}

	id := s.Workload("orders-api-stack", "stack-fn")
	proof, err := attest.Sign(context.Background(), aws.Credentials{
		AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken,
	}, s.Region, s.Audience, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"identity": proof, "database": "orders", "role": "readonly", "ttl_seconds": 60})
	resp, err = http.Post(s.BrokerURL+"/v1/credentials", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var cred struct {
		Username, Password, Host, DBName, SSLMode string
		Port                                      int
	}
	err = json.NewDecoder(resp.Body).Decode(&cred)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("issue: status %d, err %v", resp.StatusCode, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.PG.ConnString(cred.Username, cred.Password, cred.DBName))
	if err != nil {
		t.Fatalf("login with the issued credential: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM public.orders").Scan(&n); err != nil || n == 0 {
		t.Fatalf("reading orders: n=%d err=%v", n, err)
	}
	_ = conn.Close(ctx)

	if !strings.Contains(out.String(), stack.RoleARN("orders-api-stack")) {
		t.Errorf("the audit output does not name the workload's role")
	}
	if strings.Contains(out.String(), cred.Password) {
		t.Errorf("the password appears in the broker's output")
	}
	mu.Lock()
	if served != 2 {
		t.Errorf("middleware saw %d requests, want 2", served)
	}
	mu.Unlock()

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
