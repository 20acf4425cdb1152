package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/reaper"
)

func reaperRunCommand() *command {
	return &command{
		name:     "reaper run",
		summary:  "run the broker's reaper on an interval",
		synopsis: "[--every DURATION] [--once]",
		help: `Runs the reaper that functions/reaper runs in Lambda, over every database of
the broker's configuration (EPHEMERA_CONFIG and the environment of 'ephemera
broker serve'), at once and then every --every until SIGINT or SIGTERM:
revokes expired leases, sweeps orphaned ephemera roles, deletes used nonces,
prunes old audit rows.

Each run prints one JSON summary line on stdout (msg "reaper run": revoked,
failed, swept, nonces_deleted, audit_pruned, duration_ms); audit lines are
JSON on stdout too, operational logs JSON on stderr. A failed run is logged
and retried at the next tick; with --once, it exits 1.`,
		example: "ephemera reaper run --every 5s",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			every := fs.Duration("every", time.Minute, "`DURATION` between runs, at least 1s")
			once := fs.Bool("once", false, "run once and exit")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				if *every < time.Second {
					return usagef("", "--every %s is shorter than 1s", *every)
				}
				return c.reaperRun(ctx, *every, *once)
			}
		},
	}
}

func (c *CLI) reaperRun(ctx context.Context, every time.Duration, once bool) error {
	cfg, err := config.FromEnv(c.Getenv)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(c.Stderr, nil))
	stores, err := lease.Open(ctx, cfg, lease.OpenOptions{Getenv: c.Getenv})
	if err != nil {
		return err
	}
	defer stores.Close()
	r := reaper.New(stores.All(), audit.New(c.Stdout, log), log, reaper.Config{Now: c.Now})
	log.Info("reaper running", "every", every.String(), "once", once, "databases", cfg.DatabaseNames())
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		sum, err := r.Run(ctx)
		if ctx.Err() != nil && !once {
			return nil
		}
		if werr := c.summaryLine(sum); werr != nil {
			return werr
		}
		if err != nil {
			log.Error("reaper run failed; retrying at the next run", "err", err)
		}
		if once {
			if err != nil {
				return err
			}
			if sum.Failed > 0 {
				return fmt.Errorf("%d %s failed; recorded and retried on every later run", sum.Failed, plural(sum.Failed, "revocation", "revocations"))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// summaryLine prints one run's summary as a JSON line shaped like the audit lines.
func (c *CLI) summaryLine(sum reaper.Summary) error {
	line, err := json.Marshal(struct {
		Time  time.Time `json:"time"`
		Level string    `json:"level"`
		Msg   string    `json:"msg"`
		reaper.Summary
	}{c.Now().UTC(), "INFO", "reaper run", sum})
	if err != nil {
		return err
	}
	_, err = c.Stdout.Write(append(line, '\n'))
	return err
}
