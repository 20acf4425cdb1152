package lambdaemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// maxEvents bounds the in-memory protocol record; past it the oldest half is
// dropped.
const maxEvents = 10000

// errDeadline is returned by waitUntil when the deadline passes.
var errDeadline = errors.New("lambdaemu: deadline passed")

// Emulator is one emulated Lambda execution environment: a Runtime API and
// Extensions API server on 127.0.0.1 and the child processes using it. Its
// methods are safe for concurrent use; Invoke and Shutdown run one at a
// time.
type Emulator struct {
	cfg       Config
	addr      string
	logStream string
	logs      *logSink
	log       *slog.Logger
	srv       *http.Server
	serveDone chan struct{}

	opMu sync.Mutex // serializes INIT, Invoke and Shutdown

	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every state change
	sb       *sandbox
	needInit bool // the last sandbox is gone; the next Invoke runs INIT
	frozen   bool
	closed   bool
	events   []string
	allProcs []*process

	closeOnce sync.Once
}

// Result is the outcome of one invocation.
type Result struct {
	// RequestID is the invocation's request id (Lambda-Runtime-Aws-Request-Id).
	RequestID string
	// Payload is the body the runtime posted to /response, or to /error;
	// for a timeout or a crash before any answer, a JSON
	// {"errorMessage","errorType"} made by the emulator.
	Payload []byte
	// ErrorType is empty on success. After /error it is the
	// Lambda-Runtime-Function-Error-Type header (or, as aws-lambda-go sends
	// it, the errorType field of the body; "Unhandled" if neither). The
	// emulator sets ErrorTypeTimedOut ("Sandbox.Timedout"),
	// ErrorTypeRuntimeExit or ErrorTypeExtensionCrash itself.
	ErrorType string
	// Duration runs from delivering INVOKE until the runtime and every
	// extension called next again (the whole Invoke phase, as Lambda bills
	// it), or until the failure.
	Duration time.Duration
}

// ShutdownResult tells how the children left during Shutdown.
type ShutdownResult struct {
	// Exited names the children that exited by themselves in time (the
	// runtime is "runtime").
	Exited []string
	// Killed names the children that were SIGKILLed: still running at their
	// deadline, or (extensions not registered for SHUTDOWN, and the runtime
	// when no extension is registered) killed at once as Lambda does.
	Killed []string
	// Duration is how long the Shutdown phase took.
	Duration time.Duration
}

// ExtensionInfo describes one extension of the current (or last) sandbox.
type ExtensionInfo struct {
	// Name is the executable's file name, or the name an internal extension
	// registered with.
	Name string
	// ID is the Lambda-Extension-Identifier; empty if it never registered.
	ID string
	// Events are the events it registered for.
	Events []string
	// Internal is true for an extension registered from inside the runtime
	// process during runtime init (aws-lambda-go's lambda.WithEnableSIGTERM
	// registers "GoLangEnableSIGTERM" this way).
	Internal bool
	// PID is the process id (0 for internal extensions).
	PID int
	// Exited reports whether the process has exited.
	Exited bool
	// InitError and ExitError are what it reported with init/error and
	// exit/error.
	InitError, ExitError *ErrorReport
}

// Start starts the API server, then runs INIT: it starts every extension in
// cfg.ExtensionsDir, waits until all of them registered, starts the
// runtime, and waits until the runtime called invocation/next and every
// extension called event/next, all within cfg.InitTimeout. If INIT fails it
// kills the children and returns an *InitError; other errors are
// configuration or system errors, or ctx's error if it ends during INIT.
// With cfg.Freeze the sandbox is frozen when Start returns.
func Start(ctx context.Context, cfg Config) (*Emulator, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if _, err := listExtensions(cfg.ExtensionsDir); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("lambdaemu: listen: %w", err)
	}
	e := &Emulator{
		cfg:       cfg,
		addr:      ln.Addr().String(),
		logStream: logStreamName(time.Now()),
		logs:      &logSink{out: cfg.Output},
		log:       cfg.Logger,
		serveDone: make(chan struct{}),
		changed:   make(chan struct{}),
	}
	e.srv = &http.Server{
		Handler:           e.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() {
		defer close(e.serveDone)
		_ = e.srv.Serve(ln)
	}()
	e.opMu.Lock()
	err = e.runInit(ctx)
	e.opMu.Unlock()
	if err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

// TB is the part of testing.TB that StartTB uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// StartTB is Start for tests: it fails tb if INIT fails and closes the
// emulator (killing every child) when tb's cleanups run.
func StartTB(tb TB, cfg Config) *Emulator {
	tb.Helper()
	e, err := Start(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("lambdaemu.StartTB: %v", err)
		return nil
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

// RuntimeAPI is the value of AWS_LAMBDA_RUNTIME_API, "127.0.0.1:PORT".
func (e *Emulator) RuntimeAPI() string { return e.addr }

// Invoke runs one invocation: it thaws the sandbox, delivers INVOKE to the
// runtime (the payload, with the Lambda-Runtime-* headers) and to every
// extension registered for INVOKE (with the same requestId and absolute
// deadlineMs = now + Config.Timeout), waits for the runtime's response or
// error and for the runtime and every extension to call next again, and
// freezes the sandbox again (Config.Freeze).
//
// A function that does not answer by the deadline gets a Result with
// ErrorType "Sandbox.Timedout"; a child that exits gets "Runtime.ExitError"
// or "Extension.Crash". In those cases, and when an extension is still busy
// at the deadline or ctx ends, the emulator resets the sandbox as Lambda
// does: a Shutdown phase with reason "timeout" or "failure" (extensions
// registered for SHUTDOWN see it), and the next Invoke runs INIT again
// first, returning its *InitError if that fails.
//
// The returned error is reserved for the emulator's own failures (closed,
// ctx done, INIT failed); function errors are in the Result.
func (e *Emulator) Invoke(ctx context.Context, payload []byte) (*Result, error) {
	if len(payload) > MaxPayloadSize {
		return nil, fmt.Errorf("lambdaemu: payload of %d bytes exceeds %d", len(payload), MaxPayloadSize)
	}
	e.opMu.Lock()
	defer e.opMu.Unlock()

	e.mu.Lock()
	closed, needInit, sb := e.closed, e.needInit, e.sb
	crashed := sb != nil && sb.phase == phaseIdle && sb.fatal != ""
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if crashed && !needInit {
		if _, err := e.reset(ctx, reasonFailure); err != nil {
			return nil, err
		}
		needInit = true
	}
	if needInit {
		if err := e.runInit(ctx); err != nil {
			return nil, err
		}
	}

	now := time.Now()
	inv := &invocation{
		id:       newUUID(),
		payload:  payload,
		deadline: time.UnixMilli(now.Add(e.cfg.Timeout).UnixMilli()),
		traceID:  newTraceID(now),
	}
	e.mu.Lock()
	sb = e.sb
	e.thawLocked()
	sb.phase = phaseInvoke
	sb.rt.pending = inv
	ev := agentEvent{
		EventType:          eventInvoke,
		DeadlineMs:         inv.deadline.UnixMilli(),
		RequestID:          inv.id,
		InvokedFunctionArn: e.cfg.functionARN(),
		Tracing:            &tracing{Type: "X-Amzn-Trace-Id", Value: inv.traceID},
	}
	for _, x := range sb.exts {
		if x.id != "" && x.alive() && x.subscribed(eventInvoke) {
			x.queue = append(x.queue, ev)
		}
	}
	e.recordLocked("invoke %s deadlineMs=%d", inv.id, ev.DeadlineMs)
	e.notifyLocked()
	e.mu.Unlock()

	err := e.waitUntil(ctx, inv.deadline, func() bool {
		return sb.fatal != "" || (inv.responded && sb.everyoneIdle())
	})
	if errors.Is(err, ErrClosed) {
		return nil, err
	}

	e.mu.Lock()
	res := &Result{RequestID: inv.id, Duration: time.Since(now)}
	if inv.responded {
		res.Payload, res.ErrorType = inv.response, inv.errorType
	}
	var reason string
	switch {
	case err == nil && sb.fatal == "":
		sb.phase = phaseIdle
		sb.rt.current = nil
		e.recordLocked("invoke done %s", inv.id)
		var stopped []*process
		if e.cfg.Freeze {
			stopped = e.freezeLocked()
		}
		e.mu.Unlock()
		waitStopped(stopped, time.Second)
		return res, nil
	case err == nil: // a child exited
		reason = reasonFailure
		if !inv.responded {
			res.ErrorType = sb.fatal
			res.Payload = errorPayload(sb.fatal, sb.fatalMsg)
		}
		e.recordLocked("invoke failed %s type=%s", inv.id, sb.fatal)
	case errors.Is(err, errDeadline):
		reason = reasonTimeout
		if !inv.responded {
			res.ErrorType = ErrorTypeTimedOut
			res.Payload = errorPayload(ErrorTypeTimedOut, fmt.Sprintf("%s %s Task timed out after %.2f seconds",
				time.Now().UTC().Format(time.RFC3339Nano), inv.id, e.cfg.Timeout.Seconds()))
			e.recordLocked("invoke timeout %s", inv.id)
		} else {
			e.recordLocked("invoke timeout %s busy=%v", inv.id, sb.busyExtensions())
		}
	default: // ctx done
		reason = reasonFailure
		e.recordLocked("invoke abandoned %s: %v", inv.id, err)
	}
	e.mu.Unlock()

	// Reset: the sandbox cannot be trusted any more.
	if _, rerr := e.reset(context.WithoutCancel(ctx), reason); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil && !errors.Is(err, errDeadline) {
		return nil, err
	}
	return res, nil
}

// reset ends the current sandbox with a Shutdown phase; the next Invoke
// runs INIT again.
func (e *Emulator) reset(ctx context.Context, reason string) (*ShutdownResult, error) {
	res, err := e.teardown(ctx, reason)
	e.mu.Lock()
	e.needInit = true
	e.mu.Unlock()
	return res, err
}

// errorPayload is the JSON error document the emulator answers for the
// function when it never answered itself.
func errorPayload(typ, msg string) []byte {
	b, _ := json.Marshal(struct {
		ErrorMessage string `json:"errorMessage"`
		ErrorType    string `json:"errorType"`
	}{msg, typ})
	return b
}

// Freeze stops every child (SIGSTOP to each process group) and returns once
// they are stopped. Invoke and Shutdown thaw the sandbox themselves.
// Wall-clock time keeps running while frozen, so sleeping while frozen
// "jumps the clock" for the children.
func (e *Emulator) Freeze() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	procs := e.freezeLocked()
	e.mu.Unlock()
	waitStopped(procs, time.Second)
	return nil
}

// Thaw resumes every child (SIGCONT).
func (e *Emulator) Thaw() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	e.thawLocked()
	return nil
}

// Frozen reports whether the children are stopped.
func (e *Emulator) Frozen() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.frozen
}

func (e *Emulator) freezeLocked() []*process {
	if e.frozen || e.sb == nil {
		return nil
	}
	procs := e.sb.liveProcs()
	for _, p := range procs {
		e.signalLocked(p, syscall.SIGSTOP)
	}
	e.frozen = true
	e.recordLocked("freeze")
	return procs
}

func (e *Emulator) thawLocked() {
	if !e.frozen || e.sb == nil {
		return
	}
	for _, p := range e.sb.liveProcs() {
		e.signalLocked(p, syscall.SIGCONT)
	}
	e.frozen = false
	e.recordLocked("thaw")
}

// Shutdown runs the Shutdown phase and closes the emulator: reason
// "spindown", deadlineMs = now + Config.ShutdownTimeout. The runtime gets
// SIGTERM and 30 % of the budget to exit (without any registered extension
// it is killed at once, as Lambda does); then every extension registered for
// SHUTDOWN gets the SHUTDOWN event and must exit by the deadline;
// extensions not registered for SHUTDOWN are killed. Whatever still runs
// at its deadline is SIGKILLed and listed in Killed. If ctx ends first the
// rest is killed at once and ctx's error returned with the result.
func (e *Emulator) Shutdown(ctx context.Context) (*ShutdownResult, error) {
	e.opMu.Lock()
	defer e.opMu.Unlock()
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	res, err := e.teardown(ctx, reasonSpindown)
	if cerr := e.Close(); err == nil {
		err = cerr
	}
	return res, err
}

// Close kills every child, stops the server and waits for both. It is
// idempotent and may be called while Invoke runs (which then returns
// ErrClosed).
func (e *Emulator) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		var procs []*process
		for _, p := range e.allProcs {
			if !p.exited {
				e.signalLocked(p, syscall.SIGKILL)
				procs = append(procs, p)
			}
		}
		e.frozen = false
		e.recordLocked("close")
		e.notifyLocked()
		e.mu.Unlock()
		waitReaped(procs, 5*time.Second)
		_ = e.srv.Close()
		<-e.serveDone
	})
	return nil
}

// Logs returns everything the children printed so far, each line prefixed
// "[name] ".
func (e *Emulator) Logs() string { return e.logs.String() }

// Events returns the protocol record: one line per event the emulator saw
// or caused, oldest first, such as
//
//	start extok pid=1234
//	register extok id=<uuid> events=INVOKE,SHUTDOWN
//	extension next extok
//	runtime next
//	init done
//	freeze
//	invoke <request-id> deadlineMs=<ms>
//	runtime event <request-id>
//	extension event extok INVOKE <request-id>
//	runtime response <request-id> bytes=<n>
//	signal runtime SIGTERM
//	extension event extok SHUTDOWN spindown
//	exit extok status="0"
//
// The lines are meant for tests and debugging; credentials never appear.
func (e *Emulator) Events() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.events)
}

// Extensions describes the extensions of the current (or last) sandbox:
// the external ones in file name order, then the internal ones.
func (e *Emulator) Extensions() []ExtensionInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.sb == nil {
		return nil
	}
	out := make([]ExtensionInfo, 0, len(e.sb.exts))
	for _, x := range e.sb.exts {
		info := ExtensionInfo{
			Name:      x.name,
			ID:        x.id,
			Events:    slices.Clone(x.events),
			Internal:  x.internal,
			InitError: x.initErr,
			ExitError: x.exitErr,
		}
		if x.proc != nil {
			info.PID = x.proc.pid
			info.Exited = x.proc.exited
		}
		out = append(out, info)
	}
	return out
}

// PIDs maps the name of every live child of the current sandbox ("runtime"
// and the extensions' file names) to its process id.
func (e *Emulator) PIDs() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := map[string]int{}
	if e.sb != nil {
		for _, p := range e.sb.liveProcs() {
			m[p.name] = p.pid
		}
	}
	return m
}

// notifyLocked wakes everybody waiting for a state change.
func (e *Emulator) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// recordLocked appends one line to the protocol record.
func (e *Emulator) recordLocked(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if len(e.events) >= maxEvents {
		e.events = append(e.events[:0], e.events[maxEvents/2:]...)
	}
	e.events = append(e.events, s)
	e.log.Debug("lambdaemu: " + s)
}

// waitUntil waits until cond (called with e.mu held) is true. It returns
// errDeadline when deadline passes first, ErrClosed after Close, or ctx's
// error.
func (e *Emulator) waitUntil(ctx context.Context, deadline time.Time, cond func() bool) error {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return ErrClosed
		}
		if cond() {
			e.mu.Unlock()
			return nil
		}
		ch := e.changed
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			e.mu.Lock()
			ok := cond()
			e.mu.Unlock()
			if ok {
				return nil
			}
			return errDeadline
		}
	}
}

// waitStopped polls /proc until every process is in the stopped state, so
// that Freeze returns once the sandbox really is frozen. Where /proc is
// missing it returns at once.
func waitStopped(procs []*process, limit time.Duration) {
	end := time.Now().Add(limit)
	for _, p := range procs {
		for time.Now().Before(end) {
			state, err := procState(p.pid)
			if err != nil || state == 'T' || state == 't' || state == 'Z' || state == 'X' {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// procState returns the state letter of /proc/<pid>/stat.
func procState(pid int) (byte, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may contain spaces.
	i := len(b) - 1
	for i >= 0 && b[i] != ')' {
		i--
	}
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("lambdaemu: malformed /proc/%d/stat", pid)
	}
	return b[i+2], nil
}
