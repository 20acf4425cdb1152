package lambdaemu

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// phase is the lifecycle phase of one sandbox generation.
type phase int

const (
	phaseExtensionInit phase = iota // extensions started, waiting for them to register
	phaseRuntimeInit                // runtime started, waiting for everybody's next
	phaseIdle                       // between invocations (frozen if Config.Freeze)
	phaseInvoke                     // an INVOKE is under way
	phaseShutdown                   // SHUTDOWN (or a reset) is under way
	phaseDead                       // every child is gone
)

func (p phase) initName() string {
	if p == phaseExtensionInit {
		return PhaseExtensionInit
	}
	return PhaseRuntimeInit
}

func (p phase) initializing() bool { return p == phaseExtensionInit || p == phaseRuntimeInit }

// Event types of the Extensions API.
const (
	eventInvoke   = "INVOKE"
	eventShutdown = "SHUTDOWN"
)

// Shutdown reasons. The documentation lists SPINDOWN, TIMEOUT and FAILURE;
// the wire values are lower case (as the reference implementation sends).
const (
	reasonSpindown = "spindown"
	reasonTimeout  = "timeout"
	reasonFailure  = "failure"
)

// process is one child: an external extension or the runtime.
type process struct {
	name string
	cmd  *exec.Cmd
	pid  int
	out  *lineWriter
	done chan struct{} // closed once the process has been reaped

	// guarded by Emulator.mu
	exited bool
	status string
}

// agentEvent is the body of an /extension/event/next response.
type agentEvent struct {
	EventType          string   `json:"eventType"`
	DeadlineMs         int64    `json:"deadlineMs"`
	RequestID          string   `json:"requestId,omitempty"`
	InvokedFunctionArn string   `json:"invokedFunctionArn,omitempty"`
	Tracing            *tracing `json:"tracing,omitempty"`
	ShutdownReason     string   `json:"shutdownReason,omitempty"`
}

type tracing struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// extension is one registered (or expected) extension. All fields are
// guarded by Emulator.mu.
type extension struct {
	name     string
	internal bool     // registered from inside the runtime process
	proc     *process // nil for internal extensions
	id       string   // "" until registered
	events   []string
	waiters  int          // event/next calls waiting
	queue    []agentEvent // events not yet picked up
	initErr  *ErrorReport
	exitErr  *ErrorReport
}

func (x *extension) subscribed(event string) bool { return slices.Contains(x.events, event) }

// alive reports whether the extension can still take part.
func (x *extension) alive() bool { return x.internal || (x.proc != nil && !x.proc.exited) }

// idle reports whether the extension is waiting in event/next with nothing
// left to deliver: it has finished with the current phase.
func (x *extension) idle() bool { return x.waiters > 0 && len(x.queue) == 0 }

// invocation is one INVOKE. Fields after payload are guarded by
// Emulator.mu.
type invocation struct {
	id       string
	payload  []byte
	deadline time.Time
	traceID  string

	responded bool
	response  []byte
	errorType string
}

// runtimeState is the runtime's side of the Runtime API.
type runtimeState struct {
	proc    *process
	waiters int         // invocation/next calls waiting
	pending *invocation // INVOKE not yet picked up
	current *invocation // INVOKE delivered; answered when current.responded
}

func (r *runtimeState) idle() bool { return r.waiters > 0 && r.pending == nil }

// sandbox is one generation of children: INIT creates it, SHUTDOWN or a
// reset ends it. Guarded by Emulator.mu.
type sandbox struct {
	phase   phase
	exts    []*extension // external ones in file name order, then internal ones
	rt      runtimeState
	procs   []*process
	initErr *InitError
	// fatal is the error type of an unexpected exit after INIT; the sandbox
	// must be reset.
	fatal    string
	fatalMsg string
}

func (sb *sandbox) extByName(name string) *extension {
	for _, x := range sb.exts {
		if x.name == name {
			return x
		}
	}
	return nil
}

func (sb *sandbox) extByID(id string) *extension {
	for _, x := range sb.exts {
		if x.id != "" && strings.EqualFold(x.id, id) {
			return x
		}
	}
	return nil
}

func (sb *sandbox) registered() int {
	n := 0
	for _, x := range sb.exts {
		if x.id != "" {
			n++
		}
	}
	return n
}

// unregistered lists the external extensions that have not registered.
func (sb *sandbox) unregistered() []string {
	var names []string
	for _, x := range sb.exts {
		if !x.internal && x.id == "" {
			names = append(names, x.name)
		}
	}
	return names
}

// busyExtensions lists the registered, live extensions that are not
// waiting in event/next.
func (sb *sandbox) busyExtensions() []string {
	var names []string
	for _, x := range sb.exts {
		if x.id != "" && x.alive() && !x.idle() {
			names = append(names, x.name)
		}
	}
	return names
}

// everyoneIdle reports whether the runtime and every registered extension
// wait in next: the condition that ends INIT and INVOKE.
func (sb *sandbox) everyoneIdle() bool {
	return sb.rt.idle() && len(sb.busyExtensions()) == 0
}

func (sb *sandbox) liveProcs() []*process {
	var ps []*process
	for _, p := range sb.procs {
		if !p.exited {
			ps = append(ps, p)
		}
	}
	return ps
}

// spawnLocked starts one child in its own process group. It must be called
// with e.mu held, so that the exit watcher finds the process registered.
func (e *Emulator) spawnLocked(sb *sandbox, name, path string, isRuntime bool) (*process, error) {
	cmd := exec.Command(path)
	cmd.Env = e.cfg.environ(e.addr, e.logStream, isRuntime)
	cmd.Dir = filepath.Dir(e.cfg.Bootstrap)
	out := &lineWriter{name: name, sink: e.logs}
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	// A grandchild that keeps the output pipes open must not block Wait.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{name: name, cmd: cmd, pid: cmd.Process.Pid, out: out, done: make(chan struct{})}
	sb.procs = append(sb.procs, p)
	e.allProcs = append(e.allProcs, p)
	e.recordLocked("start %s pid=%d", name, p.pid)
	go e.watch(sb, p)
	return p, nil
}

// watch reaps p and reports its exit.
func (e *Emulator) watch(sb *sandbox, p *process) {
	err := p.cmd.Wait()
	p.out.flush()
	status := "0"
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.ProcessState.String()
	case err != nil:
		status = err.Error()
	}
	e.mu.Lock()
	p.exited = true
	p.status = status
	e.recordLocked("exit %s status=%q", p.name, status)
	e.onExitLocked(sb, p)
	e.notifyLocked()
	e.mu.Unlock()
	close(p.done)
}

// onExitLocked turns an unexpected exit into an INIT failure or a fatal
// sandbox error.
func (e *Emulator) onExitLocked(sb *sandbox, p *process) {
	if e.closed || sb.phase == phaseShutdown || sb.phase == phaseDead {
		return
	}
	var typ, msg, ext string
	if p == sb.rt.proc {
		typ = ErrorTypeRuntimeExit
		msg = fmt.Sprintf("runtime exited (%s)", p.status)
	} else {
		for _, x := range sb.exts {
			if x.proc == p {
				ext = x.name
				typ = ErrorTypeExtensionCrash
				msg = fmt.Sprintf("extension %s exited (%s)", x.name, p.status)
				if x.exitErr != nil {
					typ = ErrorTypeExtensionExitError
					msg = fmt.Sprintf("extension %s exited (%s) after exit/error %s", x.name, p.status, x.exitErr.ErrorType)
				}
			}
		}
	}
	if sb.phase.initializing() {
		if sb.initErr == nil {
			sb.initErr = &InitError{Phase: sb.phase.initName(), ErrorType: typ, Message: msg, Extension: ext}
		}
		return
	}
	if sb.fatal == "" {
		sb.fatal, sb.fatalMsg = typ, msg
	}
}

// runInit runs INIT for a new sandbox generation. Called with e.opMu held.
func (e *Emulator) runInit(ctx context.Context) error {
	names, err := listExtensions(e.cfg.ExtensionsDir)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(e.cfg.InitTimeout)
	sb := &sandbox{phase: phaseExtensionInit}

	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	e.sb = sb
	e.needInit = false
	e.frozen = false
	e.recordLocked("init extensions=%s", strings.Join(names, ","))
	// Extensions are started together; none waits for another.
	for _, name := range names {
		x := &extension{name: name}
		sb.exts = append(sb.exts, x)
		p, err := e.spawnLocked(sb, name, filepath.Join(e.cfg.ExtensionsDir, name), false)
		if err != nil {
			e.mu.Unlock()
			return e.failInit(sb, &InitError{Phase: PhaseExtensionInit, ErrorType: ErrorTypeExtensionLaunchError,
				Message: err.Error(), Extension: name})
		}
		x.proc = p
	}
	e.mu.Unlock()

	// Extension init: every extension must register.
	if err := e.awaitInit(ctx, sb, deadline, func() bool { return len(sb.unregistered()) == 0 }); err != nil {
		return err
	}
	// Runtime init.
	sb.phase = phaseRuntimeInit
	p, err := e.spawnLocked(sb, RuntimeName, e.cfg.Bootstrap, true)
	if err != nil {
		e.mu.Unlock()
		return e.failInit(sb, &InitError{Phase: PhaseRuntimeInit, ErrorType: ErrorTypeRuntimeLaunchError, Message: err.Error()})
	}
	sb.rt.proc = p
	e.mu.Unlock()

	// INIT ends when the runtime and every extension wait in next.
	if err := e.awaitInit(ctx, sb, deadline, sb.everyoneIdle); err != nil {
		return err
	}
	sb.phase = phaseIdle
	e.recordLocked("init done")
	var stopped []*process
	if e.cfg.Freeze {
		stopped = e.freezeLocked()
	}
	e.mu.Unlock()
	waitStopped(stopped, time.Second)
	return nil
}

// initWaitError turns a failed wait during INIT into the error to return.
// awaitInit waits (until deadline) for cond or an INIT failure. It returns nil
// with e.mu held when cond came true first; otherwise it fails INIT and returns
// what failInit returns, without e.mu.
func (e *Emulator) awaitInit(ctx context.Context, sb *sandbox, deadline time.Time, cond func() bool) error {
	err := e.waitUntil(ctx, deadline, func() bool { return sb.initErr != nil || cond() })
	if err != nil {
		return e.failInit(sb, e.initWaitError(sb, err))
	}
	e.mu.Lock()
	if sb.initErr != nil {
		e.mu.Unlock()
		return e.failInit(sb, nil)
	}
	return nil
}

func (e *Emulator) initWaitError(sb *sandbox, err error) error {
	if !errors.Is(err, errDeadline) {
		return err // context or ErrClosed
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if sb.initErr != nil {
		return nil // a reported error wins; failInit returns it
	}
	limit := e.cfg.InitTimeout
	if names := sb.unregistered(); len(names) > 0 {
		return &InitError{Phase: sb.phase.initName(), ErrorType: ErrorTypeExtensionInitTimeout, Extension: names[0],
			Message: fmt.Sprintf("extension(s) %s did not register within %v", strings.Join(names, ", "), limit)}
	}
	if names := sb.busyExtensions(); len(names) > 0 {
		return &InitError{Phase: sb.phase.initName(), ErrorType: ErrorTypeExtensionInitTimeout, Extension: names[0],
			Message: fmt.Sprintf("extension(s) %s did not call event/next within %v", strings.Join(names, ", "), limit)}
	}
	return &InitError{Phase: sb.phase.initName(), ErrorType: ErrorTypeRuntimeInitTimeout,
		Message: fmt.Sprintf("runtime did not call invocation/next within %v", limit)}
}

// failInit ends a failed INIT: it records the error (the first one
// reported wins over err), kills every child and waits for them.
func (e *Emulator) failInit(sb *sandbox, err error) error {
	e.mu.Lock()
	var ie *InitError
	if errors.As(err, &ie) && sb.initErr == nil {
		sb.initErr = ie
	}
	if sb.initErr != nil {
		err = sb.initErr
		e.recordLocked("init failed type=%s extension=%s", sb.initErr.ErrorType, sb.initErr.Extension)
	} else {
		e.recordLocked("init aborted: %v", err)
	}
	sb.phase = phaseDead
	e.needInit = true
	procs := sb.liveProcs()
	for _, p := range procs {
		e.signalLocked(p, syscall.SIGKILL)
	}
	e.frozen = false
	e.notifyLocked()
	e.mu.Unlock()
	waitReaped(procs, 5*time.Second)
	return err
}

// waitReaped waits until every process is reaped or the limit passes.
func waitReaped(procs []*process, limit time.Duration) {
	t := time.NewTimer(limit)
	defer t.Stop()
	for _, p := range procs {
		select {
		case <-p.done:
		case <-t.C:
			return
		}
	}
}

// teardown runs the Shutdown phase for the current sandbox (reason is
// "spindown" for Shutdown, "timeout" or "failure" for a reset), following
// the documented sequence: SIGTERM to the runtime (when any extension is
// registered; otherwise it is killed at once) with 30 % of the budget to
// exit, then a SHUTDOWN event to every external extension registered for
// it, which must exit before the deadline; extensions not registered for
// SHUTDOWN are killed, and whatever is left at the deadline is killed.
func (e *Emulator) teardown(ctx context.Context, reason string) (*ShutdownResult, error) {
	start := time.Now()
	budget := e.cfg.ShutdownTimeout
	deadline := start.Add(budget)
	res := &ShutdownResult{}

	e.mu.Lock()
	sb := e.sb
	if sb == nil || sb.phase == phaseDead {
		e.mu.Unlock()
		return res, nil
	}
	e.thawLocked() // stopped processes cannot handle SIGTERM or read an event
	sb.phase = phaseShutdown
	e.recordLocked("shutdown reason=%s deadlineMs=%d", reason, deadline.UnixMilli())
	anyExtension := sb.registered() > 0
	rt := sb.rt.proc
	if rt != nil && rt.exited {
		rt = nil
	}
	var graceful []*extension
	var others []*process
	for _, x := range sb.exts {
		if x.internal || x.proc == nil || x.proc.exited {
			continue
		}
		if x.id != "" && x.subscribed(eventShutdown) {
			graceful = append(graceful, x)
		} else {
			others = append(others, x.proc)
		}
	}
	e.mu.Unlock()

	var killed []*process
	kill := func(p *process) {
		e.mu.Lock()
		if !p.exited {
			e.signalLocked(p, syscall.SIGKILL)
			killed = append(killed, p)
			res.Killed = append(res.Killed, p.name)
		}
		e.mu.Unlock()
	}

	// The runtime first.
	if rt != nil {
		if !anyExtension {
			kill(rt)
		} else {
			e.mu.Lock()
			e.signalLocked(rt, syscall.SIGTERM)
			e.mu.Unlock()
			if waitExit(ctx, rt, start.Add(time.Duration(float64(budget)*runtimeShutdownShare))) {
				res.Exited = append(res.Exited, rt.name)
			} else {
				kill(rt)
			}
		}
	}
	for _, p := range others {
		kill(p)
	}

	// Then the extensions registered for SHUTDOWN.
	e.mu.Lock()
	ev := agentEvent{EventType: eventShutdown, ShutdownReason: reason, DeadlineMs: deadline.UnixMilli()}
	for _, x := range graceful {
		if !x.proc.exited {
			x.queue = append(x.queue, ev)
		}
	}
	e.notifyLocked()
	e.mu.Unlock()
	for _, x := range graceful {
		if waitExit(ctx, x.proc, deadline) {
			res.Exited = append(res.Exited, x.name)
		} else {
			kill(x.proc)
		}
	}

	waitReaped(killed, 5*time.Second)
	e.mu.Lock()
	sb.phase = phaseDead
	e.notifyLocked()
	e.mu.Unlock()
	res.Duration = time.Since(start)
	return res, ctx.Err()
}

// waitExit waits until p exits, the deadline passes or ctx is done, and
// reports whether p exited.
func waitExit(ctx context.Context, p *process, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signalLocked sends sig to p's process group, unless p has been reaped
// (its pid may have been reused).
func (e *Emulator) signalLocked(p *process, sig syscall.Signal) {
	if p.exited {
		return
	}
	if err := syscall.Kill(-p.pid, sig); err != nil {
		_ = p.cmd.Process.Signal(sig)
	}
	switch sig {
	case syscall.SIGSTOP, syscall.SIGCONT:
	default:
		e.recordLocked("signal %s %s", p.name, sigName(sig))
	}
}

func sigName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	case syscall.SIGCONT:
		return "SIGCONT"
	}
	return sig.String()
}
