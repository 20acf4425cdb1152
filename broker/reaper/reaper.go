// Package reaper makes revocation converge: it revokes expired leases
// (terminating their sessions, reassigning and dropping what their roles own
// in every database of the cluster, dropping the roles), sweeps this
// deployment's marked ephemeral roles that no lease claims, and deletes used
// nonces, and audit rows and revoked lease rows older than the audit
// retention. A failed revocation is recorded
// on its lease and retried with exponential backoff (capped at 5 minutes) on
// every later run, forever; it never stops the batch.
//
// Several reapers may run at once: leases are taken with FOR UPDATE SKIP
// LOCKED, and each revocation commits together with its audit row, so every
// lease is revoked, and audited, exactly once.
package reaper

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/metrics"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

// Defaults of Config.
const (
	DefaultBatch          = 100
	DefaultMaxBatches     = 50
	DefaultSweepGrace     = 10 * time.Minute
	DefaultAuditRetention = 400 * 24 * time.Hour
)

// Config tunes a Reaper. Zero values take the defaults above.
type Config struct {
	// Batch is how many leases one transaction takes.
	Batch int
	// MaxBatches bounds one run per database (a Lambda invocation is bounded too).
	MaxBatches int
	// SweepGrace is how long a role must be seen orphaned before it is dropped.
	SweepGrace time.Duration
	// AuditRetention is how long audit rows, and the rows of revoked
	// leases, are kept; negative keeps them forever.
	AuditRetention time.Duration
	// Metrics receives EMF lines (RevocationFailures, SweptRoles, LiveLeases, ReapLag). Optional.
	Metrics *metrics.Emitter
	// Now is the clock.
	Now func() time.Time
}

// Summary is the outcome of one run.
type Summary struct {
	Revoked       int      `json:"revoked"`
	Failed        int      `json:"failed"`
	Swept         int      `json:"swept"`
	NoncesDeleted int64    `json:"nonces_deleted"`
	AuditPruned   int64    `json:"audit_pruned"`
	LeasesPruned  int64    `json:"leases_pruned"`
	DurationMS    float64  `json:"duration_ms"`
	Errors        []string `json:"errors,omitempty"`

	lags []time.Duration // expiry → revocation of each lease reaped
}

func (s *Summary) add(o Summary) {
	s.Revoked += o.Revoked
	s.Failed += o.Failed
	s.Swept += o.Swept
	s.NoncesDeleted += o.NoncesDeleted
	s.AuditPruned += o.AuditPruned
	s.LeasesPruned += o.LeasesPruned
	s.Errors = append(s.Errors, o.Errors...)
	s.lags = append(s.lags, o.lags...)
}

// Reaper revokes what has expired. Safe for concurrent use.
type Reaper struct {
	stores map[string]*lease.Store
	names  []string
	audit  *audit.Log
	log    *slog.Logger
	cfg    Config
}

// New returns a reaper over stores (by configured database name).
func New(stores map[string]*lease.Store, auditLog *audit.Log, logger *slog.Logger, cfg Config) *Reaper {
	// A zero (or negative) setting takes its default: cmp.Or picks the first non-zero.
	cfg.Batch = cmp.Or(max(cfg.Batch, 0), DefaultBatch)
	cfg.MaxBatches = cmp.Or(max(cfg.MaxBatches, 0), DefaultMaxBatches)
	cfg.SweepGrace = cmp.Or(max(cfg.SweepGrace, 0), DefaultSweepGrace)
	if cfg.AuditRetention == 0 {
		cfg.AuditRetention = DefaultAuditRetention
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r := &Reaper{stores: stores, audit: auditLog, log: logger, cfg: cfg}
	for name := range stores {
		r.names = append(r.names, name)
	}
	sort.Strings(r.names)
	return r
}

// Run reaps, sweeps and cleans every database once. Errors of one database
// do not stop the others; they are returned joined (and listed in the summary).
func (r *Reaper) Run(ctx context.Context) (Summary, error) {
	start := time.Now()
	var sum Summary
	var errs []error
	for _, name := range r.names {
		s, err := r.runDatabase(ctx, name)
		sum.add(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("reaper: %s: %w", name, err))
			sum.Errors = append(sum.Errors, fmt.Sprintf("%s: %v", name, err))
		}
	}
	sum.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return sum, errors.Join(errs...)
}

func (r *Reaper) runDatabase(ctx context.Context, name string) (Summary, error) {
	store := r.stores[name]
	sum, err := r.Reap(ctx, name, r.cfg.Batch*r.cfg.MaxBatches)
	if err != nil {
		return sum, err
	}
	swept, err := store.Sweep(ctx, r.cfg.Now(), r.cfg.SweepGrace, r.claimedElsewhere(name), r.recorder(name, audit.EventSweep, "orphan"))
	if err != nil {
		return sum, err
	}
	for _, s := range swept {
		if s.Err != nil {
			sum.Failed++
			r.log.Error("sweep failed", "database", name, "username", s.Username, "err", s.Err)
			continue
		}
		sum.Swept++
		r.line(name, audit.EventSweep, "orphan", s)
	}
	now := r.cfg.Now()
	live, err := store.CountLiveAll(ctx, now)
	if err != nil {
		return sum, err
	}
	r.cfg.Metrics.ReapRun(name, sum.Failed, sum.Swept, live, sum.lags)
	if sum.NoncesDeleted, err = store.DeleteUsedNonces(ctx, now); err != nil {
		return sum, err
	}
	if r.cfg.AuditRetention > 0 {
		before := now.Add(-r.cfg.AuditRetention)
		if sum.AuditPruned, err = store.PruneAudit(ctx, before); err != nil {
			return sum, err
		}
		if sum.LeasesPruned, err = store.PruneRevoked(ctx, before); err != nil {
			return sum, err
		}
	}
	return sum, nil
}

// Reap revokes up to limit due leases of one database, batch by batch.
// The broker calls it with a small limit after each issue, so revocation
// does not wait only for the schedule.
func (r *Reaper) Reap(ctx context.Context, database string, limit int) (Summary, error) {
	var sum Summary
	store := r.stores[database]
	if store == nil {
		return sum, fmt.Errorf("reaper: database %q is not configured", database)
	}
	for limit > 0 {
		n := min(limit, r.cfg.Batch)
		bctx, end := trace.Start(ctx, "reap_batch")
		trace.Annotate(bctx, "database", database)
		outcomes, err := store.ReapExpired(bctx, r.cfg.Now(), n, "expired", r.recorder(database, audit.EventReap, "expired"))
		end(err)
		if err != nil {
			return sum, err
		}
		for _, o := range outcomes {
			if o.Err != nil {
				sum.Failed++
				r.log.Error("revocation failed; will retry", "database", database, "lease_id", o.Lease.ID,
					"username", o.Username, "attempts", o.Attempts, "err", o.Err)
			} else {
				sum.Revoked++
				if o.Lease.RevokedAt != nil {
					sum.lags = append(sum.lags, o.Lease.RevokedAt.Sub(o.Lease.ExpiresAt))
				}
			}
			r.line(database, audit.EventReap, "expired", o)
		}
		if len(outcomes) < n {
			break
		}
		limit -= n
	}
	return sum, nil
}

// record builds the audit record of an outcome.
func record(database, event, reason string, o lease.Reaped) audit.Record {
	rec := audit.Record{Time: time.Now(), RequestID: "reaper", Event: event, Decision: audit.Allow, Reason: reason,
		Database: database, Username: o.Username}
	if o.Err != nil {
		rec.Decision, rec.Reason = audit.Error, "revocation_failed"
	} else if o.RoleGone {
		rec.Reason = reason + ":role_already_gone"
	}
	if l := o.Lease; l != nil {
		rec.PrincipalARN, rec.Account, rec.Session, rec.DBRole, rec.LeaseID = l.PrincipalARN, l.Account, l.Session, l.DBRole, l.ID
	}
	return rec
}

// recorder describes the audit row that the store writes inside the
// revoking transaction.
func (r *Reaper) recorder(database, event, reason string) lease.AuditFunc {
	return func(o lease.Reaped) audit.Record { return record(database, event, reason, o) }
}

// line writes the audit JSON line once the transaction committed.
func (r *Reaper) line(database, event, reason string, o lease.Reaped) {
	if r.audit != nil {
		r.audit.Line(record(database, event, reason, o))
	}
}

// claimedElsewhere reports whether another database holds a live lease for a role.
func (r *Reaper) claimedElsewhere(self string) lease.Claimed {
	return func(ctx context.Context, username string) (bool, error) {
		for _, name := range r.names {
			if name == self {
				continue
			}
			ok, err := r.stores[name].HasLiveLease(ctx, username)
			if err != nil || ok {
				return ok, err
			}
		}
		return false, nil
	}
}
