package e2e

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
)

// TestShutdownRevokes: at SHUTDOWN the extension revokes its lease before
// the deadline: the role is gone from pg_roles and the lease is marked
// revoked.
func TestShutdownRevokes(t *testing.T) {
	const function = "orders-shutdown-fn"
	sb := mustStartSandbox(t, st.Workload("orders-api-shutdown", function), nil, nil)
	a := sb.invokeDemo(t)
	if !a.ok() {
		t.Fatalf("invocation: %+v", a)
	}
	ctx := context.Background()
	res, err := sb.emu.Shutdown(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown took %v (budget %v): exited %v, killed %v", res.Duration.Round(time.Millisecond),
		lambdaemu.DefaultShutdownTimeout, res.Exited, res.Killed)
	if slices.Contains(res.Killed, "ephemera") || !slices.Contains(res.Exited, "ephemera") {
		t.Errorf("the extension did not exit by itself before the deadline: %+v", res)
	}

	var roles int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, a.CurrentUser).Scan(&roles); err != nil {
		t.Fatal(err)
	}
	if roles != 0 {
		t.Errorf("role %s still exists after SHUTDOWN", a.CurrentUser)
	}
	var leases, revoked int
	if err := admin.QueryRow(ctx, `SELECT count(*), count(revoked_at) FROM ephemera.leases WHERE session = $1`,
		function).Scan(&leases, &revoked); err != nil {
		t.Fatal(err)
	}
	if leases == 0 || revoked != leases {
		t.Errorf("%d of %d leases revoked after SHUTDOWN", revoked, leases)
	}
}

// TestShutdownWithHangingBroker: when the broker accepts the revocation
// and never answers, the extension still exits before the SHUTDOWN
// deadline (the lease then expires on its own).
func TestShutdownWithHangingBroker(t *testing.T) {
	proxy := startProxy(t, proxyForward)
	sb := mustStartSandbox(t, st.Workload("orders-api-hang", "orders-hang-fn"),
		map[string]string{"EPHEMERA_BROKER_URL": proxy.URL}, nil)
	if a := sb.invokeDemo(t); !a.ok() {
		t.Fatalf("invocation through the proxy: %+v", a)
	}
	proxy.mode.Store(proxyHang)
	res, err := sb.emu.Shutdown(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown with a hanging broker took %v (budget %v): exited %v, killed %v",
		res.Duration.Round(time.Millisecond), lambdaemu.DefaultShutdownTimeout, res.Exited, res.Killed)
	if slices.Contains(res.Killed, "ephemera") || !slices.Contains(res.Exited, "ephemera") {
		t.Errorf("the extension was killed at the deadline: %+v", res)
	}
}
