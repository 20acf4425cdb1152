// Command ephemera is ephemera's external Lambda extension. Installed as
// /opt/extensions/ephemera (a layer), it registers with the Extensions API, serves
// short-lived PostgreSQL credentials (EPHEMERA_CREDENTIALS) and AWS sessions
// (EPHEMERA_AWS_PROFILES, in the AWS SDKs' container-credentials format) to the function
// on 127.0.0.1:EPHEMERA_PORT, keeps them fresh, and revokes the database leases at
// SHUTDOWN (STS sessions cannot be revoked; they end at their expiration).
// Package extension/config documents its environment, package extension/lifecycle its
// life in the sandbox.
//
// This file only wires the packages together: it parses the configuration, builds the
// broker client, the agent and the local server, calls lifecycle.Run, and maps its error
// to the exit code.
//
// Build: CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' ./extension
package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/extension/extapi"
	"github.com/ephemera-sh/ephemera/extension/lifecycle"
	"github.com/ephemera-sh/ephemera/extension/localserver"
	"github.com/ephemera-sh/ephemera/internal/logging"
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
	level := logging.Level(getenv("EPHEMERA_LOG_LEVEL"))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})).With("extension", name)

	ext, err := extapi.New(getenv(extapi.EnvRuntimeAPI))
	if err != nil {
		log.Error("cannot reach the Extensions API", "error", err.Error())
		return 1
	}
	// Parsed before registration, reported after it (by Setup).
	cfg, cfgErr := config.Parse(getenv)
	lazy := cfgErr == nil && cfg.OnInitFailure == config.LazyInit
	if cfgErr == nil {
		log = log.With("function", cfg.FunctionName)
	}
	err = lifecycle.Run(ctx, lifecycle.Config{
		Name: name, Extensions: ext, Lazy: lazy, Logger: log,
		Setup: func(context.Context) (lifecycle.Parts, error) {
			if cfgErr != nil {
				return lifecycle.Parts{}, cfgErr
			}
			return setup(cfg, log)
		},
	})
	if err != nil {
		return 1
	}
	return 0
}

// setup builds the broker client, the agent and the local server (serving) from cfg.
func setup(cfg *config.Config, log *slog.Logger) (lifecycle.Parts, error) {
	creds := aws.Credentials{AccessKeyID: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey, SessionToken: cfg.SessionToken, Source: "environment"}
	broker, err := brokerclient.New(brokerclient.Config{
		BaseURL: cfg.BrokerURL.String(), Audience: cfg.Audience, Region: cfg.Region, STSRegion: cfg.STSRegion,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil }),
		Logger:      log,
	})
	if err != nil {
		return lifecycle.Parts{}, err
	}
	cache, err := agent.New(broker, cfg.Credentials, agent.Options{
		InitTimeout: cfg.InitTimeout, Lazy: cfg.OnInitFailure == config.LazyInit,
		RefreshMargin: cfg.RefreshMargin, Logger: log, AWSProfiles: cfg.AWSProfiles,
	})
	if err != nil {
		return lifecycle.Parts{}, err
	}
	srv, err := localserver.Start(localserver.Config{Port: cfg.Port, Token: cfg.SessionToken, Source: cache, Logger: log})
	if err != nil {
		return lifecycle.Parts{}, lifecycle.Fail(lifecycle.ErrorListenFailed, err)
	}
	log.Info("serving", "addr", srv.Addr(), "credentials", cfg.CredentialNames(), "aws_profiles", cfg.AWSProfileNames(),
		"on_init_failure", string(cfg.OnInitFailure))
	return lifecycle.Parts{Agent: cache, Server: srv}, nil
}
