package agent_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/config"
)

// memBroker is a fixed agent.Broker; in the extension it is a *brokerclient.Client.
type memBroker struct{ now func() time.Time }

func (m memBroker) Issue(_ context.Context, database, role string, ttl time.Duration) (*api.Credential, error) {
	now := m.now()
	return &api.Credential{LeaseID: "lease-1", Database: database, Role: role, Username: "eph_" + role + "_1",
		Password: "example", Host: "localhost", Port: 5432, DBName: database, IssuedAt: now,
		ExpiresAt: now.Add(ttl), MaxExpiresAt: now.Add(time.Hour), Renewable: true}, nil
}

func (m memBroker) Renew(_ context.Context, id string, ttl time.Duration) (*api.Renewal, error) {
	return &api.Renewal{LeaseID: id, ExpiresAt: m.now().Add(ttl), MaxExpiresAt: m.now().Add(time.Hour)}, nil
}

func (memBroker) Revoke(context.Context, string) error { return nil }

func Example() {
	ctx := context.Background()
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	creds := []config.Credential{{Name: "orders", Database: "orders", Role: "readonly", TTL: 15 * time.Minute}}

	a, err := agent.New(memBroker{now: clock}, creds, agent.Options{Clock: clock})
	if err != nil {
		log.Fatal(err)
	}
	if err := a.Start(ctx); err != nil { // INIT
		log.Fatal(err)
	}
	c, _ := a.Get(ctx, "orders", false)
	fmt.Println(c.Username, c.ExpiresAt.Format(time.Kitchen))

	now = now.Add(13 * time.Minute) // 2 minutes left, under the 3-minute margin: renewed on read
	c, _ = a.Get(ctx, "orders", false)
	fmt.Println(c.Username, c.ExpiresAt.Format(time.Kitchen))

	fmt.Println(a.RevokeAll(ctx), a.Ready()) // SHUTDOWN
	// Output:
	// eph_readonly_1 8:15AM
	// eph_readonly_1 8:28AM
	// <nil> false
}
