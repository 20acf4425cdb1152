package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestFreezeThawRotation: with 6 s leases on a role whose max_ttl is 12 s,
// the sandbox sleeps frozen past the refresh point (and past the expiry)
// again and again, and is thawed by an invocation: the extension renews or
// replaces the credential as the wall clock says, the credential it serves
// logs in, and not one of the function's queries fails across at least 10
// credential generations (a new user, or a renewed expiry, seen by the
// function).
func TestFreezeThawRotation(t *testing.T) {
	const role, function = "orders-api-rotate", "orders-rotate-fn"
	id := st.Workload(role, function)
	sb := mustStartSandbox(t, id, map[string]string{
		"EPHEMERA_CREDENTIALS": fmt.Sprintf("orders=orders/rotating:%ds", int(rotatingTTL/time.Second)),
	}, nil)
	addr := fmt.Sprintf("127.0.0.1:%d", sb.port())
	hc := &http.Client{Timeout: 10 * time.Second}
	ctx := context.Background()

	generations := func() (issues, renewals int) {
		err := admin.QueryRow(ctx, `SELECT count(*) FILTER (WHERE event = 'issue'), count(*) FILTER (WHERE event = 'renew')
			FROM ephemera.audit_log WHERE session = $1 AND decision = 'allow'`, function).Scan(&issues, &renewals)
		if err != nil {
			t.Fatal(err)
		}
		return issues, renewals
	}

	// Sleeps while frozen: short of the refresh point, just past it (a
	// renewal, or a new credential near max_ttl), and past the expiry.
	pattern := []time.Duration{4 * time.Second, 4 * time.Second, 7 * time.Second, 500 * time.Millisecond, 4 * time.Second, 3 * time.Second}
	const wantGenerations = 10
	budget := time.Now().Add(80 * time.Second)
	var invocations, queries, failures, served int
	users := map[string]bool{}
	seen := map[string]bool{} // generations the function used: user and expiry
	start := time.Now()
	for i := 0; ; i++ {
		issues, renewals := generations()
		if len(seen) >= wantGenerations && issues >= 3 && renewals >= 2 && invocations >= len(pattern) {
			break
		}
		if time.Now().After(budget) {
			t.Fatalf("in %v: the function saw %d generations; the broker made %d issues and %d renewals",
				time.Since(start).Round(time.Second), len(seen), issues, renewals)
		}
		if !sb.emu.Frozen() {
			t.Fatal("the sandbox is not frozen between invocations")
		}
		time.Sleep(pattern[i%len(pattern)])

		a := sb.invokeDemo(t)
		invocations++
		queries += 2 // current_user and the orders
		if !a.ok() {
			failures++
			t.Errorf("invocation %d after %v frozen: %+v", invocations, pattern[i%len(pattern)], a)
			continue
		}
		users[a.CurrentUser] = true
		seen[a.CurrentUser+" "+a.LeaseExpiresAt.String()] = true

		// Every other round, the test process reads the credential the
		// extension serves (while thawed) and logs in with it.
		if i%2 == 1 {
			if err := sb.emu.Thaw(); err != nil {
				t.Fatal(err)
			}
			status, body := localGet(t, hc, addr, "/v1/credentials/orders", id.SessionToken, "")
			if err := sb.emu.Freeze(); err != nil {
				t.Fatal(err)
			}
			var c localCredential
			if status != http.StatusOK || json.Unmarshal(body, &c) != nil {
				failures++
				t.Errorf("local read after invocation %d: %d", invocations, status)
				continue
			}
			served++
			if !time.Now().Before(c.ExpiresAt) {
				t.Errorf("the extension served a credential that expired at %v", c.ExpiresAt)
			}
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			conn, err := pgx.Connect(qctx, c.DSN)
			if err == nil {
				var user string
				err = conn.QueryRow(qctx, "SELECT current_user").Scan(&user)
				_ = conn.Close(qctx)
			}
			cancel()
			queries++
			if err != nil {
				failures++
				t.Errorf("login with the served credential %s (expires %v): refused", c.Username, c.ExpiresAt)
			}
		}
	}
	issues, renewals := generations()
	if failures != 0 {
		t.Errorf("%d of %d queries failed", failures, queries)
	}
	if len(users) < 3 {
		t.Errorf("the function used %d distinct users, want at least 3", len(users))
	}
	t.Logf("%d invocations and %d queries in %v, %d failed; the function used %d generations (%d users); the broker made %d issues and %d renewals; %d served credentials logged in",
		invocations, queries, time.Since(start).Round(time.Second), failures, len(seen), len(users), issues, renewals, served)

	res, err := sb.emu.Shutdown(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var live int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM ephemera.leases
		WHERE session = $1 AND revoked_at IS NULL AND expires_at > now()`, function).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != 0 {
		t.Errorf("%d unexpired leases left unrevoked after SHUTDOWN (%+v)", live, res)
	}
}
