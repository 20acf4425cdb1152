// Command reaper is the reaper's AWS Lambda entry point, invoked by an
// EventBridge schedule (rate(1 minute)). It revokes expired leases, sweeps
// orphan roles and cleans used nonces (package broker/reaper), returns a
// summary and logs it as one JSON line. Build with -tags lambda.norpc.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/metrics"
	"github.com/ephemera-sh/ephemera/broker/reaper"
	"github.com/ephemera-sh/ephemera/internal/lambdamain"
	"github.com/ephemera-sh/ephemera/internal/logging"
)

func main() {
	log := logging.New(os.Stdout)
	cfg := lambdamain.Config(log)
	stores, err := lease.Open(context.Background(), cfg, lease.OpenOptions{})
	if err != nil {
		lambdamain.Exit(log, "reaper did not start", err)
	}
	m, err := metrics.NewWithOptions(os.Stdout, metrics.Options{Namespace: cfg.MetricsNamespace})
	if err != nil {
		lambdamain.Exit(log, "invalid configuration", err)
	}
	r := reaper.New(stores.All(), audit.New(os.Stdout, log), log, reaper.Config{Metrics: m})
	lambda.Start(func(ctx context.Context, _ events.EventBridgeEvent) (reaper.Summary, error) {
		sum, err := r.Run(ctx)
		log.InfoContext(ctx, "reaper run", "revoked", sum.Revoked, "failed", sum.Failed, "swept", sum.Swept,
			"nonces_deleted", sum.NoncesDeleted, "audit_pruned", sum.AuditPruned, "duration_ms", sum.DurationMS, "errors", sum.Errors)
		// The other databases were still reaped; the error makes the
		// invocation count as failed (Lambda's Errors metric), and the
		// schedule retries in a minute anyway.
		return sum, err
	})
}
