package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
)

func revokeCommand() *command {
	return &command{
		name:     "revoke",
		summary:  "break-glass: revoke one lease, or every lease of a principal",
		synopsis: "[--url URL] [--database NAME] (--lease ID | --principal ARN) [--json]",
		help: `Revokes now, without asking the broker or its policies: the user loses
LOGIN, its sessions are terminated, the role is dropped and the lease is
marked revoked with reason "break-glass by <OS user>". Use it when the
broker itself is unavailable; otherwise prefer POST /v1/admin/revoke, which
is authorized by policy (action admin_revoke).

--lease revokes one lease (found in any database name unless --database).
--principal revokes every unrevoked lease (expired ones included) of a
workload, given by its canonical IAM role ARN, in every database found in
ephemera.leases or only in --database.

Each lease is audited in ephemera.audit_log, and as a JSON line on stderr:
event "revoke" (--lease) or "admin_revoke" (--principal), decision "allow",
reason "break_glass" ("break_glass:already_revoked" when there was nothing
left to do), request_id "cli-<uuid>" (one per run). principal_arn stays the
lease's principal; the person who ran the command is recorded in session as
"operator:<OS user>" (the function name remains on the lease row).

Revoking is idempotent: running the command again changes nothing and exits 0.`,
		example: "ephemera revoke --principal arn:aws:iam::123456789012:role/orders-api\n" +
			"ephemera revoke --lease 0b6e1c9e-5f1a-4c8e-9a4e-3f6d2b7c1a90",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			var o revokeOptions
			o.db.register(fs, databaseFilterUsage)
			fs.StringVar(&o.leaseID, "lease", "", "revoke the lease with this `ID`")
			fs.StringVar(&o.principal, "principal", "", "revoke every lease of the workload with this canonical IAM role `ARN`")
			fs.BoolVar(&o.asJSON, "json", false, "print one JSON object per lease instead of a table")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return c.revoke(ctx, o)
			}
		},
	}
}

type revokeOptions struct {
	db        dbFlags
	leaseID   string
	principal string
	asJSON    bool
}

const (
	resultRevoked = "revoked"
	resultAlready = "already revoked"
	resultFailed  = "failed"
)

type revoked struct {
	lease  *lease.Lease
	result string
}

func (c *CLI) revoke(ctx context.Context, o revokeOptions) error {
	switch {
	case (o.leaseID == "") == (o.principal == ""):
		return usagef("", "give exactly one of --lease ID or --principal ARN")
	case o.leaseID != "" && !uuidRE.MatchString(o.leaseID):
		return usagef("Lease ids are UUIDs, as 'ephemera leases' lists them.", "--lease %q is not a lease id", o.leaseID)
	case o.principal != "":
		if err := checkPrincipalARN(o.principal); err != nil {
			return err
		}
	}
	o.leaseID = strings.ToLower(o.leaseID)
	operator, err := c.Operator()
	if err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	pool, err := c.openDB(ctx, o.db.url)
	if err != nil {
		return err
	}
	defer pool.Close()
	id, err := lease.NewID()
	if err != nil {
		return err
	}
	run := revokeRun{
		pool: pool, requestID: "cli-" + id, event: audit.EventRevoke,
		reason: "break-glass by " + operator, session: "operator:" + operator,
		lines: audit.New(c.Stderr, nil, nil), now: c.Now,
	}
	var targets []*lease.Lease
	var names []string
	if o.leaseID != "" {
		l, err := findLease(ctx, pool, o.leaseID, o.db.database)
		if err != nil {
			return err
		}
		targets = []*lease.Lease{l}
	} else {
		run.event = audit.EventAdminRevoke
		if names, err = labels(ctx, pool, o.db.database); err != nil {
			return err
		}
		for _, name := range names {
			ls, err := lease.NewStore(pool, name).LiveByPrincipal(ctx, o.principal)
			if err != nil {
				return err
			}
			targets = append(targets, ls...)
		}
	}
	var results []revoked
	var errs []error
	for _, l := range targets {
		r, err := run.one(ctx, l)
		results = append(results, r)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(targets) == 0 { // nothing to revoke: still audit the break-glass decision
		for _, name := range names {
			rec := run.record(&lease.Lease{Database: name, PrincipalARN: o.principal}, "break_glass", audit.Allow, 0)
			rec.LeaseID = ""
			if err := run.audit(ctx, rec); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := c.printRevoked(results, o, run.reason); err != nil {
		return err
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d %s failed (a failed revocation is recorded on its lease and retried by the reaper): %w",
			len(errs), plural(len(errs), "revocation or audit write", "revocations or audit writes"), errs[0])
	}
	return nil
}

// findLease finds a lease by id, in the named database or in any.
func findLease(ctx context.Context, pool *pgxpool.Pool, id, database string) (*lease.Lease, error) {
	if database == "" {
		err := pool.QueryRow(ctx, "SELECT database FROM ephemera.leases WHERE lease_id = $1", id).Scan(&database)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("%w %s in this database", errNoLease, id)
		}
		if err != nil {
			return nil, fmt.Errorf("finding lease %s: %w", id, err)
		}
	}
	l, err := lease.NewStore(pool, database).Get(ctx, id)
	if errors.Is(err, lease.ErrNotFound) {
		return nil, fmt.Errorf("%w %s in database %s", errNoLease, id, database)
	}
	return l, err
}

// revokeRun revokes leases and audits each.
type revokeRun struct {
	pool      *pgxpool.Pool
	requestID string
	event     string
	reason    string // on the lease row
	session   string // on the audit row: operator:<user>
	lines     *audit.Log
	now       func() time.Time
}

func (r *revokeRun) one(ctx context.Context, l *lease.Lease) (revoked, error) {
	if l.RevokedAt != nil {
		return revoked{l, resultAlready}, r.audit(ctx, r.record(l, "break_glass:already_revoked", audit.Allow, 0))
	}
	start := time.Now()
	got, err := lease.NewStore(r.pool, l.Database).Revoke(ctx, l.ID, r.reason, r.now())
	latency := float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		aerr := r.audit(ctx, r.record(l, "revocation_failed", audit.Error, latency))
		return revoked{l, resultFailed}, errors.Join(fmt.Errorf("lease %s: %w", l.ID, err), aerr)
	}
	return revoked{got, resultRevoked}, r.audit(ctx, r.record(got, "break_glass", audit.Allow, latency))
}

func (r *revokeRun) record(l *lease.Lease, reason, decision string, latency float64) audit.Record {
	return audit.Record{
		Time: r.now(), RequestID: r.requestID, Event: r.event, Decision: decision, Reason: reason,
		PrincipalARN: l.PrincipalARN, Account: l.Account, Session: r.session,
		Database: l.Database, DBRole: l.DBRole, Username: l.Username, LeaseID: l.ID, LatencyMS: latency,
	}
}

// audit writes the row, then the JSON line.
func (r *revokeRun) audit(ctx context.Context, rec audit.Record) error {
	err := audit.Insert(context.WithoutCancel(ctx), r.pool, rec)
	r.lines.Line(rec)
	if err != nil {
		return fmt.Errorf("audit row of lease %s not written: %w", rec.LeaseID, err)
	}
	return nil
}

func (c *CLI) printRevoked(results []revoked, o revokeOptions, reason string) error {
	now := c.Now()
	if o.asJSON {
		out := make([]leaseJSON, len(results))
		for i, r := range results {
			out[i] = toJSON(r.lease, now)
			out[i].Result = r.result
		}
		return jsonLines(c.Stdout, out)
	}
	count := map[string]int{}
	for _, r := range results {
		count[r.result]++
	}
	n := count[resultRevoked]
	msg := fmt.Sprintf("%d %s revoked", n, plural(n, "lease", "leases"))
	if k := count[resultAlready]; k > 0 {
		msg += fmt.Sprintf(", %d already revoked", k)
	}
	if k := count[resultFailed]; k > 0 {
		msg += fmt.Sprintf(", %d failed", k)
	}
	if len(results) == 0 {
		msg += ": " + o.principal + " holds no unrevoked lease"
		if o.db.database != "" {
			msg += " in database " + o.db.database
		}
	}
	if n > 0 {
		msg += " (" + reason + ")"
	}
	fmt.Fprintln(c.Stdout, msg+".")
	if len(results) == 0 {
		return nil
	}
	rows := make([][]string, 0, len(results))
	for _, r := range results {
		l := r.lease
		rows = append(rows, []string{l.ID, l.PrincipalARN, l.Session, l.Database + "/" + l.DBRole, l.Username, tsp(l.RevokedAt), r.result})
	}
	return table(c.Stdout, []string{"LEASE", "PRINCIPAL", "FUNCTION", "DATABASE/ROLE", "USERNAME", "REVOKED", "RESULT"}, rows)
}
