// Command ephemera is the external Lambda extension of DESIGN §9. Installed as
// /opt/extensions/ephemera (a layer), it registers with the Extensions API, serves
// short-lived PostgreSQL credentials (EPHEMERA_CREDENTIALS) and AWS sessions
// (EPHEMERA_AWS_PROFILES, in the AWS SDKs' container-credentials format) to the function
// on 127.0.0.1:EPHEMERA_PORT, keeps them fresh, and revokes the database leases at
// SHUTDOWN (STS sessions cannot be revoked; they end at their expiration).
// extension/config documents its environment.
//
// This file only wires the packages together:
//
//	config.FromEnv → extapi Register → localserver.Start → agent.Start (INIT fetch)
//	→ loop on extapi Next: INVOKE → agent.OnInvoke; SHUTDOWN → agent.RevokeAll, exit 0
//
// Build: CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' ./extension
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/extension/extapi"
	"github.com/ephemera-sh/ephemera/extension/localserver"
)

// Error types reported to /init/error and /exit/error.
const (
	errConfigInvalid     = "Extension.ConfigInvalid"
	errListenFailed      = "Extension.ListenFailed"
	errBrokerUnavailable = "Extension.BrokerUnavailable"
	errCredentialRefused = "Extension.CredentialRefused"
	errEventLoop         = "Extension.EventLoopFailed"
)

const (
	// shutdownMargin is kept free before the SHUTDOWN deadline.
	shutdownMargin = 100 * time.Millisecond
	// fallbackBudget bounds cleanup when Lambda gave no deadline (signals, API failures).
	fallbackBudget = 1500 * time.Millisecond
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	code := run(ctx, os.Args, os.Getenv, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the extension's life; it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	name := "ephemera"
	if len(args) > 0 {
		name = filepath.Base(args[0])
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("extension", name)

	ext, err := extapi.New(getenv(extapi.EnvRuntimeAPI))
	if err != nil {
		log.Error("cannot reach the Extensions API", "error", err.Error())
		return 1
	}
	cfg, cfgErr := config.Parse(getenv)
	if _, err := ext.Register(ctx, name, extapi.Invoke, extapi.Shutdown); err != nil {
		log.Error("register failed", "error", err.Error())
		return 1
	}
	initFail := func(errType string, err error) int {
		log.Error("INIT failed", "error_type", errType, "error", err.Error())
		if rerr := ext.InitError(ctx, errType, err); rerr != nil {
			log.Error("reporting the INIT failure failed", "error", rerr.Error())
		}
		return 1
	}
	if cfgErr != nil {
		return initFail(errConfigInvalid, cfgErr)
	}
	log = log.With("function", cfg.FunctionName)

	creds := aws.Credentials{AccessKeyID: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey, SessionToken: cfg.SessionToken, Source: "environment"}
	broker, err := brokerclient.New(brokerclient.Config{
		BaseURL: cfg.BrokerURL.String(), Audience: cfg.Audience, Region: cfg.Region, STSRegion: cfg.STSRegion,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil }),
		Logger:      log,
	})
	if err != nil {
		return initFail(errConfigInvalid, err)
	}
	cache, err := agent.New(broker, cfg.Credentials, agent.Options{
		InitTimeout: cfg.InitTimeout, Lazy: cfg.OnInitFailure == config.LazyInit,
		RefreshMargin: cfg.RefreshMargin, Logger: log, AWSProfiles: cfg.AWSProfiles,
	})
	if err != nil {
		return initFail(errConfigInvalid, err)
	}
	srv, err := localserver.Start(localserver.Config{Port: cfg.Port, Token: cfg.SessionToken, Source: cache, Logger: log})
	if err != nil {
		return initFail(errListenFailed, err)
	}
	log.Info("serving", "addr", srv.Addr(), "credentials", cfg.CredentialNames(), "aws_profiles", cfg.AWSProfileNames(),
		"on_init_failure", string(cfg.OnInitFailure))

	if err := cache.Start(ctx); err != nil {
		if cfg.OnInitFailure == config.FailInit {
			errType := errCredentialRefused
			if errors.Is(err, agent.ErrUnavailable) {
				errType = errBrokerUnavailable
			}
			// The agent now holds the function's reads (no 503 that would make the
			// function exit and fail INIT with Runtime.ExitError first): give back what
			// was issued, report, and only then stop the local server. Lambda may kill
			// the sandbox as soon as the report is in.
			rctx, cancel := context.WithTimeout(context.Background(), fallbackBudget)
			if rerr := cache.RevokeAll(rctx); rerr != nil {
				log.Warn("some leases were not revoked; they expire on their own", "error", rerr.Error())
			}
			cancel()
			code := initFail(errType, err)
			sctx, cancel := context.WithTimeout(context.Background(), shutdownMargin)
			if serr := srv.Shutdown(sctx); serr != nil {
				log.Info("local server closed with reads held", "error", serr.Error())
			}
			cancel()
			return code
		}
		log.Warn("INIT fetch failed; retrying in the background, on every INVOKE and on reads (503 meanwhile)", "error", err.Error())
	} else {
		log.Info("credentials ready")
	}

	for {
		ev, err := ext.Next(ctx)
		if err != nil {
			shutdown(log, cache, srv, time.Now().Add(fallbackBudget))
			if ctx.Err() != nil {
				log.Info("stopped by signal")
				return 0
			}
			log.Error("event loop failed", "error", err.Error())
			ectx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = ext.ExitError(ectx, errEventLoop, err)
			cancel()
			return 1
		}
		switch ev.Type {
		case extapi.Invoke:
			deadline := ev.Deadline
			if deadline.IsZero() {
				deadline = time.Now().Add(agent.DefaultRefreshTimeout)
			}
			ictx, cancel := context.WithDeadline(ctx, deadline)
			ictx = brokerclient.WithTraceHeader(ictx, ev.Tracing.Value)
			if err := cache.OnInvoke(ictx, ev.Deadline); err != nil {
				log.Warn("refresh on INVOKE failed", "request_id", ev.RequestID, "error", err.Error())
			}
			cancel()
		case extapi.Shutdown:
			deadline := ev.Deadline.Add(-shutdownMargin)
			if ev.Deadline.IsZero() {
				deadline = time.Now().Add(fallbackBudget)
			}
			log.Info("shutting down", "reason", ev.ShutdownReason)
			shutdown(log, cache, srv, deadline)
			return 0
		}
	}
}

// shutdown revokes every lease (and forgets the AWS sessions, which STS cannot revoke) and
// stops the local server, by deadline.
func shutdown(log *slog.Logger, cache *agent.Agent, srv *localserver.Server, deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if err := cache.RevokeAll(ctx); err != nil {
		log.Warn("some leases were not revoked; they expire on their own", "error", err.Error())
	}
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("local server shutdown", "error", err.Error())
	}
}
