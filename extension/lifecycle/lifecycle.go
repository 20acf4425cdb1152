// Package lifecycle is the extension's life in the Lambda sandbox: the INIT, INVOKE and
// SHUTDOWN state machine that the extension's main only wires up.
//
//	Register ─▶ Setup ─▶ Agent.Start (INIT fetch) ─▶ loop on Next:
//	                                                   INVOKE   → Agent.OnInvoke(deadline)
//	                                                   SHUTDOWN → Agent.RevokeAll, Server.Shutdown, return
//
// Registration comes first, so that whatever fails after it can be reported: Setup's
// failure is reported on /init/error as Extension.ConfigInvalid (or the type chosen with
// [Fail], e.g. Extension.ListenFailed).
//
// # A failed INIT fetch
//
// In fail mode (Config.Lazy false) a failed INIT fetch is reported on /init/error —
// Extension.BrokerUnavailable when the broker could not be reached, else
// Extension.CredentialRefused — before any read of the local API is answered: the agent
// holds reads after a failed INIT, Run gives back what was issued, reports, and only then
// stops the local server. Lambda may end the sandbox as soon as the report is in; a read
// answered first would let the function fail INIT with an error of its own.
//
// In lazy mode the failure is logged and the loop starts anyway: reads wait (at most the
// agent's FetchWait, 2 s by default) for a fetch and then answer 503, and every INVOKE
// fetches what is missing within its deadline.
//
// # INVOKE and SHUTDOWN
//
// Lambda freezes the sandbox between events, so no timer is trusted: every INVOKE hands
// the invocation's deadline to Agent.OnInvoke, which checks the wall-clock expiry of
// every credential and refreshes those with less than the refresh margin left or that
// would expire before the deadline. The INVOKE's X-Ray header travels with the broker
// calls it causes. SHUTDOWN revokes the leases within its deadline (less
// [ShutdownMargin]) and returns. When the event loop itself fails, or ctx ends (a
// signal), Run cleans up within [FallbackBudget]; a failed loop is reported on
// /exit/error.
//
// aws-lambda-go's invoke loop is the model: a library, tested against an httptest
// Extensions API, so that main stays a call.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/extapi"
)

// Error types reported to /init/error and /exit/error.
const (
	ErrorConfigInvalid     = "Extension.ConfigInvalid"
	ErrorListenFailed      = "Extension.ListenFailed"
	ErrorBrokerUnavailable = "Extension.BrokerUnavailable"
	ErrorCredentialRefused = "Extension.CredentialRefused"
	ErrorEventLoop         = "Extension.EventLoopFailed"
)

const (
	// ShutdownMargin is kept free before the SHUTDOWN deadline.
	ShutdownMargin = 100 * time.Millisecond
	// FallbackBudget bounds cleanup when Lambda gave no deadline (a signal, a failed
	// event loop, a SHUTDOWN without deadline).
	FallbackBudget = 1500 * time.Millisecond
	// reportTimeout bounds a report to /exit/error.
	reportTimeout = time.Second
)

// Extensions is what Run needs of the Lambda Extensions API; *extapi.Client implements it.
type Extensions interface {
	Register(ctx context.Context, name string, events ...extapi.EventType) (string, error)
	Next(ctx context.Context) (*extapi.Event, error)
	InitError(ctx context.Context, errorType string, err error) error
	ExitError(ctx context.Context, errorType string, err error) error
}

// Agent is what Run needs of the credential cache; *agent.Agent implements it.
type Agent interface {
	Start(ctx context.Context) error
	OnInvoke(ctx context.Context, deadline time.Time) error
	RevokeAll(ctx context.Context) error
}

// Server is the local API, already serving; *localserver.Server implements it.
type Server interface {
	Shutdown(ctx context.Context) error
}

var (
	_ Extensions = (*extapi.Client)(nil)
	_ Agent      = (*agent.Agent)(nil)
)

// Parts are what Config.Setup builds once the extension is registered.
type Parts struct {
	Agent  Agent
	Server Server
}

// Config configures Run. Extensions and Setup are required.
type Config struct {
	// Name is the extension's name, registered with Lambda (the file name in
	// /opt/extensions).
	Name string
	// Extensions is the Lambda Extensions API client.
	Extensions Extensions
	// Setup builds the agent and the (serving) local server. Run calls it after
	// registration; its error is reported on /init/error, as Extension.ConfigInvalid
	// unless made with Fail.
	Setup func(ctx context.Context) (Parts, error)
	// Lazy keeps the sandbox after a failed INIT fetch (EPHEMERA_ON_INIT_FAILURE=lazy).
	Lazy bool
	// Logger receives the lifecycle's events, never a secret. Default: discard.
	Logger *slog.Logger
}

// Error is why Run failed: the error type it reported to Lambda ("" when it could not
// report, as when registration failed) and the cause.
type Error struct {
	Type string
	Err  error
}

func (e *Error) Error() string {
	if e.Type == "" {
		return "lifecycle: " + e.Err.Error()
	}
	return "lifecycle: " + e.Type + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// Fail wraps err with the error type Run reports when Setup returns it.
func Fail(errType string, err error) error { return &Error{Type: errType, Err: err} }

// Run is the extension's life: it registers, sets up, runs INIT and then the event loop
// until SHUTDOWN or until ctx ends. It returns nil after a SHUTDOWN, or when ctx ended
// (a signal), both once the leases are revoked within the deadline; otherwise an *Error,
// already reported to Lambda when its Type is set. The process should then exit 1.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Extensions == nil || cfg.Setup == nil {
		return &Error{Err: errors.New("Extensions and Setup are required")}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := cfg.Extensions.Register(ctx, cfg.Name, extapi.Invoke, extapi.Shutdown); err != nil {
		log.Error("register failed", "error", err.Error())
		return &Error{Err: fmt.Errorf("register: %w", err)}
	}
	parts, err := cfg.Setup(ctx)
	if err != nil {
		errType := ErrorConfigInvalid
		var fe *Error
		if errors.As(err, &fe) && fe.Type != "" {
			errType, err = fe.Type, fe.Err
		}
		return initFail(ctx, cfg.Extensions, log, errType, err)
	}

	if err := parts.Agent.Start(ctx); err != nil {
		if !cfg.Lazy {
			return failInit(ctx, cfg.Extensions, log, parts, err)
		}
		log.Warn("INIT fetch failed; retrying in the background, on every INVOKE and on reads (503 meanwhile)", "error", err.Error())
	} else {
		log.Info("credentials ready")
	}
	return loop(ctx, cfg.Extensions, log, parts)
}

// initFail reports an INIT failure and returns it.
func initFail(ctx context.Context, ext Extensions, log *slog.Logger, errType string, err error) error {
	log.Error("INIT failed", "error_type", errType, "error", err.Error())
	if rerr := ext.InitError(ctx, errType, err); rerr != nil {
		log.Error("reporting the INIT failure failed", "error", rerr.Error())
	}
	return &Error{Type: errType, Err: err}
}

// failInit ends a failed INIT fetch in fail mode. The agent now holds the function's
// reads (no 503 that would make the function exit and fail INIT with Runtime.ExitError
// first): give back what was issued, report, and only then stop the local server.
func failInit(ctx context.Context, ext Extensions, log *slog.Logger, parts Parts, err error) error {
	errType := ErrorCredentialRefused
	if errors.Is(err, agent.ErrUnavailable) {
		errType = ErrorBrokerUnavailable
	}
	rctx, cancel := context.WithTimeout(context.Background(), FallbackBudget)
	if rerr := parts.Agent.RevokeAll(rctx); rerr != nil {
		log.Warn("some leases were not revoked; they expire on their own", "error", rerr.Error())
	}
	cancel()
	ferr := initFail(ctx, ext, log, errType, err)
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownMargin)
	if serr := parts.Server.Shutdown(sctx); serr != nil {
		log.Info("local server closed with reads held", "error", serr.Error())
	}
	cancel()
	return ferr
}

// loop serves events until SHUTDOWN, a failure of the event loop, or ctx's end.
func loop(ctx context.Context, ext Extensions, log *slog.Logger, parts Parts) error {
	for {
		ev, err := ext.Next(ctx)
		if err != nil {
			shutdown(log, parts, time.Now().Add(FallbackBudget))
			if ctx.Err() != nil {
				log.Info("stopped by signal")
				return nil
			}
			log.Error("event loop failed", "error", err.Error())
			ectx, cancel := context.WithTimeout(context.Background(), reportTimeout)
			if rerr := ext.ExitError(ectx, ErrorEventLoop, err); rerr != nil {
				log.Error("reporting the failure failed", "error", rerr.Error())
			}
			cancel()
			return &Error{Type: ErrorEventLoop, Err: err}
		}
		switch ev.Type {
		case extapi.Invoke:
			invoke(ctx, log, parts.Agent, ev)
		case extapi.Shutdown:
			deadline := ev.Deadline.Add(-ShutdownMargin)
			if ev.Deadline.IsZero() {
				deadline = time.Now().Add(FallbackBudget)
			}
			log.Info("shutting down", "reason", ev.ShutdownReason)
			shutdown(log, parts, deadline)
			return nil
		}
	}
}

// invoke runs the agent's INVOKE check within the invocation's deadline, carrying its
// X-Ray header to the broker calls it causes.
func invoke(ctx context.Context, log *slog.Logger, a Agent, ev *extapi.Event) {
	deadline := ev.Deadline
	if deadline.IsZero() {
		deadline = time.Now().Add(agent.DefaultRefreshTimeout)
	}
	ictx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ictx = brokerclient.WithTraceHeader(ictx, ev.Tracing.Value)
	if err := a.OnInvoke(ictx, ev.Deadline); err != nil {
		log.Warn("refresh on INVOKE failed", "request_id", ev.RequestID, "error", err.Error())
	}
}

// shutdown revokes every lease (and forgets the AWS sessions, which STS cannot revoke)
// and stops the local server, by deadline.
func shutdown(log *slog.Logger, parts Parts, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := parts.Agent.RevokeAll(ctx); err != nil {
		log.Warn("some leases were not revoked; they expire on their own", "error", err.Error())
	}
	if err := parts.Server.Shutdown(ctx); err != nil {
		log.Warn("local server shutdown", "error", err.Error())
	}
}
