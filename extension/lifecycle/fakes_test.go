package lifecycle_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/extension/extapi"
	"github.com/ephemera-sh/ephemera/extension/lifecycle"
)

func slogJSON(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// fakeExt is an Extensions API whose calls fail on demand.
type fakeExt struct {
	registerErr error
	events      []*extapi.Event // delivered in order; then nextErr
	nextErr     error

	mu      sync.Mutex
	reports []string // "init:<type>" or "exit:<type>"
}

func (f *fakeExt) Register(context.Context, string, ...extapi.EventType) (string, error) {
	return "id", f.registerErr
}

func (f *fakeExt) Next(context.Context) (*extapi.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.events) > 0 {
		ev := f.events[0]
		f.events = f.events[1:]
		return ev, nil
	}
	return nil, f.nextErr
}

func (f *fakeExt) InitError(_ context.Context, t string, _ error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, "init:"+t)
	return nil
}

func (f *fakeExt) ExitError(_ context.Context, t string, _ error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, "exit:"+t)
	return nil
}

// fakeAgent records what the lifecycle asked of it.
type fakeAgent struct {
	startErr error

	mu        sync.Mutex
	invokes   []time.Time
	traces    []bool
	revoked   int
	stopped   int
	revokeCtx bool // RevokeAll had a deadline
}

func (a *fakeAgent) Start(context.Context) error { return a.startErr }

func (a *fakeAgent) OnInvoke(ctx context.Context, deadline time.Time) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.invokes = append(a.invokes, deadline)
	_, ok := ctx.Deadline()
	a.traces = append(a.traces, ok)
	return nil
}

func (a *fakeAgent) RevokeAll(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revoked++
	_, a.revokeCtx = ctx.Deadline()
	return nil
}

func (a *fakeAgent) Shutdown(context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped++
	return nil
}

func runFake(ext *fakeExt, a *fakeAgent, lazy bool) error {
	return lifecycle.Run(context.Background(), lifecycle.Config{Name: "ephemera", Extensions: ext, Lazy: lazy,
		Setup: func(context.Context) (lifecycle.Parts, error) { return lifecycle.Parts{Agent: a, Server: a}, nil }})
}

// A failed registration cannot be reported; Run says so with an *Error without a type.
func TestRegisterFailure(t *testing.T) {
	ext := &fakeExt{registerErr: errors.New("connection refused")}
	a := &fakeAgent{}
	err := runFake(ext, a, false)
	var le *lifecycle.Error
	if !errors.As(err, &le) || le.Type != "" || len(ext.reports) != 0 || a.revoked != 0 {
		t.Fatalf("Run: %v, reports %v", err, ext.reports)
	}
}

// A failed event loop cleans up (revokes, within a deadline; stops the server) and is
// reported on /exit/error.
func TestEventLoopFailureReportedOnExit(t *testing.T) {
	deadline := time.Now().Add(time.Minute)
	ext := &fakeExt{events: []*extapi.Event{{Type: extapi.Invoke, RequestID: "r1", Deadline: deadline}}, nextErr: errors.New("status 500")}
	a := &fakeAgent{}
	err := runFake(ext, a, false)
	var le *lifecycle.Error
	if !errors.As(err, &le) || le.Type != lifecycle.ErrorEventLoop {
		t.Fatalf("Run: %v", err)
	}
	if len(ext.reports) != 1 || ext.reports[0] != "exit:"+lifecycle.ErrorEventLoop {
		t.Fatalf("reports %v", ext.reports)
	}
	if len(a.invokes) != 1 || !a.invokes[0].Equal(deadline) || !a.traces[0] {
		t.Fatalf("INVOKE: deadlines %v, bounded %v", a.invokes, a.traces)
	}
	if a.revoked != 1 || !a.revokeCtx || a.stopped != 1 {
		t.Fatalf("cleanup: %d revocations (deadline %v), %d server stops", a.revoked, a.revokeCtx, a.stopped)
	}
}

// In lazy mode a failed INIT fetch is not reported: the loop runs, and SHUTDOWN ends it
// cleanly. An INVOKE without a deadline is still bounded.
func TestLazyFailureNotReported(t *testing.T) {
	ext := &fakeExt{events: []*extapi.Event{{Type: extapi.Invoke}, {Type: extapi.Shutdown, ShutdownReason: "spindown"}}}
	a := &fakeAgent{startErr: errors.New("agent: broker unavailable")}
	if err := runFake(ext, a, true); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(ext.reports) != 0 || len(a.invokes) != 1 || !a.traces[0] || a.revoked != 1 || a.stopped != 1 {
		t.Fatalf("reports %v, invokes %v (bounded %v), %d revocations, %d stops", ext.reports, a.invokes, a.traces, a.revoked, a.stopped)
	}
}
