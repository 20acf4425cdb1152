package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
	"github.com/ephemera-sh/ephemera/sam/local/stack"
)

// eventClock is a slog handler that timestamps the emulator's protocol
// record (lambdaemu logs each event at debug level).
type eventClock struct {
	mu     sync.Mutex
	events []timedEvent
}

type timedEvent struct {
	at  time.Time
	msg string
}

func (c *eventClock) Enabled(context.Context, slog.Level) bool { return true }
func (c *eventClock) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *eventClock) WithGroup(string) slog.Handler            { return c }
func (c *eventClock) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, timedEvent{at: r.Time, msg: strings.TrimPrefix(r.Message, "lambdaemu: ")})
	return nil
}

// first is the time of the first event starting with prefix.
func (c *eventClock) first(prefix string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.events {
		if strings.HasPrefix(e.msg, prefix) {
			return e.at, true
		}
	}
	return time.Time{}, false
}

// coldStart is one measured INIT of the extension.
type coldStart struct {
	total  time.Duration // process start → first event/next
	broker time.Duration // time the broker spent on its issue requests meanwhile
	rssKiB int           // the extension's VmRSS once INIT is done
}

// measureInit reads the cold start of the extension of sb, started with an
// eventClock as its Logger.
func measureInit(t *testing.T, sb *sandbox, clock *eventClock) coldStart {
	t.Helper()
	start, ok1 := clock.first("start ephemera ")
	next, ok2 := clock.first("extension next ephemera")
	if !ok1 || !ok2 {
		t.Fatalf("the protocol record lacks the extension's start or first next: %v", sb.emu.Events())
	}
	cs := coldStart{total: next.Sub(start)}
	cs.broker, _ = rec.issueTime(start, next)
	rss, err := vmRSS(sb.emu.PIDs()["ephemera"])
	if err != nil {
		t.Fatalf("reading the extension's RSS: %v", err)
	}
	cs.rssKiB = rss
	return cs
}

// TestColdStart: the demo function's first invocation reads the orders as
// an ephemeral user; exactly one lease exists for it, and its audit row
// names the function's role and name. It also measures the extension's
// cold start (process start to its first event/next) and its memory.
func TestColdStart(t *testing.T) {
	const role, function = "orders-api-cold", "orders-cold-fn"
	clock := &eventClock{}
	sb := mustStartSandbox(t, st.Workload(role, function), nil, func(c *lambdaemu.Config) { c.Logger = slog.New(clock) })
	first := measureInit(t, sb, clock)

	a := sb.invokeDemo(t)
	if !a.ok() {
		t.Fatalf("first invocation: %+v\n%s", a, sb.out.String())
	}
	if len(a.Orders) != 3 {
		t.Errorf("read %d orders, want the 3 demo rows", len(a.Orders))
	}

	ctx := context.Background()
	rows, err := admin.Query(ctx, `SELECT lease_id::text, username, principal_arn, revoked_at IS NOT NULL
		FROM ephemera.leases WHERE session = $1`, function)
	if err != nil {
		t.Fatal(err)
	}
	type leaseRow struct {
		id, username, principal string
		revoked                 bool
	}
	var leases []leaseRow
	for rows.Next() {
		var l leaseRow
		if err := rows.Scan(&l.id, &l.username, &l.principal, &l.revoked); err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	if len(leases) != 1 {
		t.Fatalf("%d leases for %s, want exactly 1: %+v", len(leases), function, leases)
	}
	l := leases[0]
	if l.username != a.CurrentUser || l.principal != stack.RoleARN(role) || l.revoked {
		t.Errorf("lease %+v: want username %s, principal %s, not revoked", l, a.CurrentUser, stack.RoleARN(role))
	}
	var principal, session, decision string
	var n int
	err = admin.QueryRow(ctx, `SELECT count(*) OVER (), principal_arn, session, decision FROM ephemera.audit_log
		WHERE lease_id = $1 AND event = 'issue'`, l.id).Scan(&n, &principal, &session, &decision)
	if err != nil {
		t.Fatalf("audit row of the issue: %v", err)
	}
	if n != 1 || principal != stack.RoleARN(role) || session != function || decision != "allow" {
		t.Errorf("audit: %d rows, principal %q session %q decision %q; want 1, %q, %q, allow",
			n, principal, session, decision, stack.RoleARN(role), function)
	}

	// Two more cold starts, for the numbers only.
	samples := []coldStart{first}
	for i := range 2 {
		clock := &eventClock{}
		sb := mustStartSandbox(t, st.Workload(role, function+"-m"+string(rune('0'+i))), nil,
			func(c *lambdaemu.Config) { c.Logger = slog.New(clock) })
		samples = append(samples, measureInit(t, sb, clock))
		if _, err := sb.emu.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var totals, without []time.Duration
	for _, s := range samples {
		totals = append(totals, s.total)
		without = append(without, s.total-s.broker)
		t.Logf("cold start: %v to first event/next, of which broker %v (without: %v); extension RSS %d KiB",
			s.total.Round(100*time.Microsecond), s.broker.Round(100*time.Microsecond),
			(s.total - s.broker).Round(100*time.Microsecond), s.rssKiB)
	}
	t.Logf("cold start median of %d: %v with the broker, %v without", len(samples),
		median(totals).Round(100*time.Microsecond), median(without).Round(100*time.Microsecond))
}

// extensionLog is one JSON log line of the extension.
type extensionLog struct {
	Time      time.Time `json:"time"`
	Msg       string    `json:"msg"`
	Path      string    `json:"path"`
	Status    int       `json:"status"`
	LatencyMS float64   `json:"latency_ms"`
	ErrorType string    `json:"error_type"`
	Error     string    `json:"error"`
}

// extensionLogs parses the extension's JSON lines from a sandbox's output.
func extensionLogs(out string) []extensionLog {
	var logs []extensionLog
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "[ephemera] ")
		if !ok {
			continue
		}
		var l extensionLog
		if json.Unmarshal([]byte(line), &l) == nil {
			logs = append(logs, l)
		}
	}
	return logs
}

// TestFunctionReadsDuringSlowInit: the demo function builds its pool during
// its own init, while the extension is still fetching (the broker holds
// its first answer back): the extension's local server waits, the
// function's init succeeds, and the first invocation works.
func TestFunctionReadsDuringSlowInit(t *testing.T) {
	const delay = 2500 * time.Millisecond
	since := time.Now()
	rec.delayNext.Store(int64(delay))
	defer rec.delayNext.Store(0)
	// Debug level: the extension logs each local request only then.
	sb, err := startSandbox(t, st.Workload("orders-api-slow", "orders-slow-fn"), map[string]string{"EPHEMERA_LOG_LEVEL": "debug"}, nil)
	if err != nil {
		t.Fatalf("INIT failed although the broker only answered late: %v\n%s", err, sb.out.String())
	}
	initTime := time.Since(since)

	var released time.Time
	for _, c := range rec.callsSince(since) {
		if c.Delay > 0 {
			released = c.End
		}
	}
	if released.IsZero() {
		t.Fatal("the broker's first answer was not held back: the test proves nothing")
	}
	// The function's first read reached the local server before the broker
	// had answered the extension, and was answered 200.
	var read *extensionLog
	for _, l := range extensionLogs(sb.out.String()) {
		if l.Msg == "local request" && strings.HasPrefix(l.Path, "/v1/credentials/") {
			read = &l
			break
		}
	}
	if read == nil {
		t.Fatalf("no local request of the function in the extension's log:\n%s", sb.out.String())
	}
	asked := read.Time.Add(-time.Duration(read.LatencyMS * float64(time.Millisecond)))
	if !asked.Before(released) || read.Status != 200 {
		t.Errorf("function's init read: asked at %v, status %d; the broker answered at %v: want asked before, 200",
			asked.Format(time.StampMicro), read.Status, released.Format(time.StampMicro))
	}
	if strings.Contains(sb.out.String(), "demo did not start") {
		t.Errorf("the demo's init failed:\n%s", sb.out.String())
	}
	t.Logf("INIT took %v with the broker's answer held back %v; the function's read waited %.0f ms",
		initTime.Round(time.Millisecond), delay, read.LatencyMS)

	if a := sb.invokeDemo(t); !a.ok() {
		t.Fatalf("first invocation: %+v\n%s", a, sb.out.String())
	}
}
