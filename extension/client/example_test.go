package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/ephemera-sh/ephemera/extension/client"
	"github.com/jackc/pgx/v5/pgxpool"
)

// fakeExtension stands in for the ephemera extension: it serves one
// credential, "orders", to callers that send the right token, and answers
// 503 while ready is false.
func fakeExtension(token string, ready bool) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Header.Get("X-Ephemera-Token") != token:
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":{"code":"unauthorized","message":"wrong token"}}`)
		case !ready:
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"code":"not_ready","message":"broker unreachable"}}`)
		case r.URL.Path != "/v1/credentials/orders":
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":"not_found","message":"no such credential"}}`)
		default:
			fmt.Fprint(w, `{"name":"orders","username":"eph_readonly_7fq2","password":"hunter2-but-longer",`+
				`"host":"orders.example","port":5432,"dbname":"orders","sslmode":"verify-full",`+
				`"dsn":"postgres://eph_readonly_7fq2:hunter2-but-longer@orders.example:5432/orders?sslmode=verify-full",`+
				`"lease_id":"0b8e5a52-93a4-4c1e-9a53-2f0d6c1c7c11","expires_at":"2026-11-17T03:15:00Z"}`)
		}
	}))
}

func ExampleClient_Credentials() {
	ext := fakeExtension("session-token", true)
	defer ext.Close()

	// In Lambda, client.New() needs no options: it reads EPHEMERA_PORT and
	// AWS_SESSION_TOKEN.
	c := client.New(client.WithBaseURL(ext.URL), client.WithToken("session-token"))
	cred, err := c.Credentials(context.Background(), "orders")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cred.Username, cred.Host, cred.Port, cred.ExpiresAt.Format(time.RFC3339))
	fmt.Println(len(cred.Password) > 0)
	// Output:
	// eph_readonly_7fq2 orders.example 5432 2026-11-17T03:15:00Z
	// true
}

func ExampleCredential_String() {
	cred := client.Credential{
		Name: "orders", Username: "eph_readonly_7fq2", Password: "hunter2-but-longer",
		Host: "orders.example", Port: 5432, DBName: "orders", SSLMode: "verify-full",
		DSN:       "postgres://eph_readonly_7fq2:hunter2-but-longer@orders.example:5432/orders",
		LeaseID:   "0b8e5a52",
		ExpiresAt: time.Date(2026, 11, 17, 3, 15, 0, 0, time.UTC),
	}
	// Printing, logging or marshalling a credential never shows its secrets.
	fmt.Printf("%+v\n", cred)
	// Output:
	// {Name:orders Username:eph_readonly_7fq2 Password:[REDACTED] Host:orders.example Port:5432 DBName:orders SSLMode:verify-full DSN:[REDACTED] LeaseID:0b8e5a52 ExpiresAt:2026-11-17T03:15:00Z}
}

func Example_errors() {
	ext := fakeExtension("session-token", false) // the broker is unreachable
	defer ext.Close()
	ctx := context.Background()

	_, err := client.New(client.WithBaseURL(ext.URL), client.WithToken("session-token")).Credentials(ctx, "orders")
	fmt.Println(errors.Is(err, client.ErrNotReady), err)

	_, err = client.New(client.WithBaseURL(ext.URL), client.WithToken("stolen")).Credentials(ctx, "orders")
	fmt.Println(errors.Is(err, client.ErrUnauthorized), err)
	// Output:
	// true client: credential "orders": 503 Service Unavailable: not_ready: broker unreachable
	// true client: credential "orders": 401 Unauthorized: unauthorized: wrong token
}

func ExamplePoolConfig() {
	ctx := context.Background()
	// In Lambda the source is client.New(); here a fixed credential, as in
	// a test.
	src := client.Static{Credential: client.Credential{
		Username: "app", Password: "secret", Host: "127.0.0.1", Port: 5432, DBName: "orders",
		SSLMode: "disable", ExpiresAt: time.Now().Add(15 * time.Minute),
	}}
	cfg, err := client.PoolConfig(ctx, src, "orders", client.WithRetireMargin(time.Minute))
	if err != nil {
		fmt.Println(err)
		return
	}
	// cfg.MaxConns is client.DefaultMaxConns (2): one invocation at a time per sandbox.

	// No connection is made until the pool needs one.
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()

	fmt.Println(cfg.ConnConfig.User, cfg.ConnConfig.Database)
	fmt.Println("connections recycled before the credential expires:",
		cfg.MaxConnLifetime+cfg.MaxConnLifetimeJitter <= 14*time.Minute)
	// Output:
	// app orders
	// connections recycled before the credential expires: true
}
