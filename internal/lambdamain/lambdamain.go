// Package lambdamain is how the broker's Lambda programs, functions/broker and
// functions/reaper, start: tracing configured (X-Ray daemon from
// AWS_XRAY_DAEMON_ADDRESS; off with EPHEMERA_TRACING=off) and the broker's
// configuration read from the environment (EPHEMERA_CONFIG). A failure to start
// is logged as one line and ends the process with status 1, which Lambda reports
// as an INIT error.
package lambdamain

import (
	"log/slog"
	"os"

	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

// Config configures tracing, then returns the configuration named by the
// environment. Tracing that cannot be configured is logged as a warning and stays
// off; a configuration that cannot be loaded ends the process (see Exit).
func Config(log *slog.Logger) *config.Config {
	if err := trace.Configure(); err != nil {
		log.Warn("tracing disabled", "err", err)
	}
	cfg, err := config.FromEnv(os.LookupEnv)
	if err != nil {
		Exit(log, "invalid configuration", err)
	}
	return cfg
}

// Exit logs msg with err as an error and ends the process with status 1.
func Exit(log *slog.Logger, msg string, err error) {
	log.Error(msg, "err", err)
	os.Exit(1)
}
