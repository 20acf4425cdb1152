package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/ephemera-sh/ephemera/broker"
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

It runs the broker's own Revoke and AdminRevoke use cases, as an operator:
no policy is consulted (you hold the admin's login already), and each lease
is audited exactly as the broker audits it, in ephemera.audit_log (committed
with the revocation) and as a JSON line on stderr: event "revoke" (--lease)
or "admin_revoke" (--principal), decision "allow" (reason "already_revoked"
when there was nothing left to do), request_id "cli-<uuid>" (one per run).
principal_arn stays the lease's principal; the person who ran the command is
recorded in session as "operator:<OS user>" (the function name remains on
the lease row).

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
		canonical, err := canonicalPrincipal(o.principal)
		if err != nil {
			return err
		}
		o.principal = canonical
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
	ctx = broker.NewContext(ctx, broker.RequestInfo{ID: "cli-" + id, Received: c.Now()})
	who := broker.Operator(operator)
	reason := "break-glass by " + operator

	if o.leaseID != "" {
		database := o.db.database
		if database == "" {
			if database, err = lease.FindDatabase(ctx, pool, o.leaseID); errors.Is(err, lease.ErrNotFound) {
				return fmt.Errorf("%w %s in this database", errNoLease, o.leaseID)
			} else if err != nil {
				return err
			}
		}
		b := broker.ForOperator(stores(pool, []string{database}), nil, c.Stderr)
		before, err := b.Store(database).Get(ctx, o.leaseID)
		if errors.Is(err, lease.ErrNotFound) {
			return fmt.Errorf("%w %s in database %s", errNoLease, o.leaseID, database)
		} else if err != nil {
			return err
		}
		_, rerr := b.Revoke(ctx, broker.RevokeInput{Identity: who, LeaseID: o.leaseID})
		results := []revoked{c.outcome(ctx, b, before, rerr)}
		if err := c.printRevoked(results, o, reason); err != nil {
			return err
		}
		if rerr != nil {
			return fmt.Errorf("lease %s: %w (a failed revocation is recorded on its lease and retried by the reaper)", o.leaseID, rerr)
		}
		return nil
	}

	names, err := labels(ctx, pool, o.db.database)
	if err != nil {
		return err
	}
	b := broker.ForOperator(stores(pool, names), nil, c.Stderr)
	var before []*lease.Lease
	for _, name := range names {
		ls, err := b.Store(name).LiveByPrincipal(ctx, o.principal)
		if err != nil {
			return err
		}
		before = append(before, ls...)
	}
	var rerr error
	if len(names) > 0 {
		_, rerr = b.AdminRevoke(ctx, broker.AdminRevokeInput{Identity: who, PrincipalARN: o.principal, Database: o.db.database})
	}
	results := make([]revoked, 0, len(before))
	for _, l := range before {
		results = append(results, c.outcome(ctx, b, l, rerr))
	}
	if err := c.printRevoked(results, o, reason); err != nil {
		return err
	}
	if rerr != nil {
		return fmt.Errorf("revoke: %w (a failed revocation is recorded on its lease and retried by the reaper)", rerr)
	}
	return nil
}

// outcome re-reads a lease after a revocation to report what became of it.
func (c *CLI) outcome(ctx context.Context, b *broker.Broker, before *lease.Lease, revokeErr error) revoked {
	if before.RevokedAt != nil {
		return revoked{before, resultAlready}
	}
	after, err := b.Store(before.Database).Get(ctx, before.ID)
	if err != nil || after.RevokedAt == nil {
		_ = revokeErr
		return revoked{before, resultFailed}
	}
	return revoked{after, resultRevoked}
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
