package storm

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/sam/local/demodb"
	"github.com/ephemera-sh/ephemera/sam/local/gobuild"
	"github.com/ephemera-sh/ephemera/sam/local/pgserver"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// Every storm runs twenty broker processes, Lambda instances of the broker,
// against one PostgreSQL of max_connections 30, three of which are
// reserved for superusers: 27 for the brokers' admin logins.
const (
	brokers        = 20
	maxConnections = 30
)

// scenario is one storm's shape.
type scenario struct {
	// clients cold-start at once, round-robin over the brokers.
	clients int
	// poolSize is every broker's EPHEMERA_DB_POOL_SIZE.
	poolSize int
	// dbTimeout is every broker's EPHEMERA_DB_TIMEOUT.
	dbTimeout time.Duration
	// exhausts says that brokers × poolSize exceeds the server's free
	// slots, so PostgreSQL must have refused connections.
	exhausts bool
}

// The names the brokers and clients share.
const (
	account     = "123456789012"
	region      = "us-east-1"
	audience    = "storm-orders"
	adminDSNEnv = "EPHEMERA_STORM_ADMIN_DSN"
	workload    = "orders-api-storm"
)

const brokerYAML = `databases:
  orders:
    host: %s
    port: %d
    dbname: %s
    sslmode: disable
    admin: {user: ephemera_admin, auth: dsn, dsn_env: ` + adminDSNEnv + `}
    roles:
      readonly:
        member_of: [orders_read]
        default_ttl: 15m
        max_ttl: 1h
        max_leases: 100000
`

const policies = `@id("orders-api-uses-orders")
permit (principal,
        action in [Ephemera::Action::"issue", Ephemera::Action::"renew", Ephemera::Action::"revoke"],
        resource in Ephemera::Database::"orders")
when { principal.account == "123456789012" && principal.role like "orders-api-*" };
`

func TestMain(m *testing.M) {
	code := m.Run()
	if err := gobuild.Clean(); err != nil {
		fmt.Fprintf(os.Stderr, "storm: removing the built binaries: %v\n", err)
	}
	os.Exit(code)
}

// TestColdStartStorm releases 500 INITs at once against twenty broker
// processes sized as in Lambda (one admin connection each: 20 of the 27
// free slots), and checks all that the package documentation lists,
// strictly: no 500 (seen by a client or logged by a broker), no lost audit
// row, no role without a lease, every client served or told why not.
func TestColdStartStorm(t *testing.T) {
	runStorm(t, scenario{clients: 500, poolSize: 1, dbTimeout: 5 * time.Second})
}

// TestColdStartStormExhausted is the storm that used to answer 500s: the
// brokers keep the pool of a long-running server (8 connections each, 160
// for 27 slots), so PostgreSQL refuses connections ("too many clients") and
// pools wait. The clients must still never see a 500, every 503 must carry
// Retry-After, every lease must have its role and its one issue/allow row.
// Fewer clients than TestColdStartStorm suffice to exhaust the server. The
// brokers' EPHEMERA_DB_TIMEOUT is 2 s, well inside the extension's INIT
// budget of 5 s, so that a broker answers 503 while its client still
// listens.
func TestColdStartStormExhausted(t *testing.T) {
	runStorm(t, scenario{clients: 200, poolSize: 8, dbTimeout: 2 * time.Second, exhausts: true})
}

func runStorm(t *testing.T, sc scenario) {
	ctx := brokerContext(t, 2*time.Minute)

	// Build the operator binary while PostgreSQL starts.
	var bin string
	var buildErr error
	built := make(chan struct{})
	go func() {
		defer close(built)
		bin, buildErr = gobuild.Binary(ctx, gobuild.ModulePath+"/cmd/ephemera", gobuild.Options{})
	}()
	pg := pgserver.StartTB(t, pgserver.Options{MaxConnections: maxConnections})
	setup, err := demodb.Bootstrap(ctx, pg.URL())
	if err != nil {
		<-built
		t.Fatalf("preparing the database: %v", err)
	}
	sts := stsserver.StartTB(t)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ephemera.yaml"), fmt.Sprintf(brokerYAML, pg.Host(), pg.Port(), pg.Database()))
	if err := os.Mkdir(filepath.Join(dir, "policies"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "policies", "storm.cedar"), policies)
	<-built
	if buildErr != nil {
		t.Fatalf("building ephemera: %v", buildErr)
	}
	if pg.External() {
		t.Logf("EPHEMERA_TEST_DATABASE_URL is set: the external server's max_connections applies, not %d", maxConnections)
	}

	adminDSN := pg.ConnString(setup.AdminUser, setup.AdminPassword, pg.Database())
	t0 := time.Now()
	procs := startBrokers(t, bin, brokers, brokerEnv(dir, sts.URL(), adminDSN, sc.poolSize, sc.dbTimeout))
	t.Logf("%d broker processes listening after %v", len(procs), time.Since(t0).Round(time.Millisecond))

	// The sandboxes, each with an identity of its own, round-robin over the
	// brokers; all built before any starts, then released together.
	rec := newRecorder()
	boxes := make([]*sandbox, sc.clients)
	for i := range boxes {
		id := stsserver.NewIdentity(account, workload, fmt.Sprintf("storm-fn-%03d", i))
		sts.Add(id)
		b := i % brokers
		if boxes[i], err = newSandbox(i, b, procs[b].url, id, rec); err != nil {
			t.Fatalf("sandbox %d: %v", i, err)
		}
	}
	t.Cleanup(func() {
		for _, s := range boxes {
			s.base.CloseIdleConnections()
		}
	})
	outcomes := make([]outcome, sc.clients)
	release := make(chan struct{})
	var wg sync.WaitGroup
	var start time.Time
	for i, s := range boxes {
		wg.Go(func() {
			<-release
			outcomes[i] = s.init(ctx, start)
		})
	}
	start = time.Now()
	close(release)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Each INIT ends within its 5 s budget; a minute means one hangs.
	hang := time.NewTimer(time.Minute)
	defer hang.Stop()
	select {
	case <-done:
	case <-hang.C:
		t.Fatalf("clients still in INIT a minute after the start: an INIT did not end within its budget")
	}
	storm := time.Since(start)

	// Let every request in flight finish (a client that gave up may have
	// left one running), so that the database and the audit lines are final.
	if err := stopBrokers(procs); err != nil {
		t.Errorf("stopping the brokers: %v", err)
	}

	served := report(t, rec, outcomes, storm, sc)
	checkAnswers(t, sc, rec, procs)
	checkOutcomes(t, outcomes)
	checkDatabase(t, ctx, sc, pg, rec, outcomes, procs)
	checkSecrets(t, rec, procs)
	checkServerLog(t, sc, pg)
	if served == 0 {
		t.Errorf("no client got a credential")
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// report logs the figures of the storm and returns how many clients got a
// credential.
func report(t *testing.T, rec *recorder, outcomes []outcome, storm time.Duration, sc scenario) int {
	t.Helper()
	var ok []time.Duration
	failed := map[string]int{}
	for _, o := range outcomes {
		if o.cred != nil {
			ok = append(ok, o.took)
			continue
		}
		failed[failureClass(o.err)]++
	}
	sorted := sortedDurations(ok)
	t.Logf("storm: %d clients over %d brokers (admin pool %d each, EPHEMERA_DB_TIMEOUT %v, PostgreSQL max_connections %d), all INITs done in %v",
		len(outcomes), brokers, sc.poolSize, sc.dbTimeout, maxConnections, storm.Round(time.Millisecond))
	t.Logf("credentials: %d of %d; time to credential p50 %v, p99 %v, max %v", len(ok), len(outcomes),
		percentile(sorted, 50).Round(time.Millisecond), percentile(sorted, 99).Round(time.Millisecond),
		percentile(sorted, 100).Round(time.Millisecond))
	for _, k := range slices.Sorted(maps.Keys(failed)) {
		t.Logf("failed INIT: %d × %s", failed[k], k)
	}
	statuses := rec.byStatus()
	var keys []int
	for s := range statuses {
		keys = append(keys, s)
	}
	sort.Ints(keys)
	var parts []string
	for _, s := range keys {
		parts = append(parts, fmt.Sprintf("%d×%d", statuses[s], s))
	}
	t.Logf("answers: %s", strings.Join(parts, ", "))
	rec.mu.Lock()
	for _, k := range slices.Sorted(maps.Keys(rec.failures)) {
		t.Logf("transport failures: %d × %s", rec.failures[k], k)
	}
	rec.mu.Unlock()
	return len(ok)
}

// failureClass names why an INIT failed, for the report.
func failureClass(err error) string {
	if err == nil {
		return "no error"
	}
	switch {
	case brokerclient.StatusOf(err) != 0:
		return fmt.Sprintf("broker answered %d %s", brokerclient.StatusOf(err), api.CodeOf(err))
	case errors.Is(err, context.DeadlineExceeded):
		return "INIT budget ran out"
	}
	return err.Error()
}
