package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
)

func auditCommand() *command {
	return &command{
		name:     "audit",
		summary:  "which workloads held access at an instant, or a principal's history",
		synopsis: "[--url URL] [--database NAME] [--principal ARN] (--at TIME | --since DURATION|TIME) [--json]",
		help: `With --at, answers "which workloads held access to this database at that
instant?": exactly the leases live at TIME, i.e. issued_at <= TIME < end,
where end = least(expires_at, revoked_at). A lease is live at its issue
instant and no longer at its expiry or revocation instant. Below the table
come the audit decisions (allow, deny and error) within --window of TIME.

With --since, lists every lease that overlaps [since, now] and every audit
decision since then: with --principal, one workload's history.

--database and --principal filter both parts and may be combined with
either mode. TIME is RFC 3339 (2026-11-17T03:00:00Z or with an offset);
--since also takes a Go duration back from now (24h, 90m). Audit rows of the
CLI's own revocations carry session "operator:<OS user>". --json prints one
JSON document {leases: [...], audit: [...], ...}.`,
		example: "ephemera audit --database orders --at 2026-11-17T03:00:00Z\n" +
			"ephemera audit --principal arn:aws:iam::123456789012:role/orders-api --since 24h",
		setup: func(c *CLI, fs *flag.FlagSet) func(context.Context, []string) error {
			var o auditOptions
			o.db.register(fs, "only this configured database `NAME` (default: all)")
			fs.StringVar(&o.principal, "principal", "", "only this workload: its canonical IAM role `ARN`")
			fs.StringVar(&o.at, "at", "", "the instant to look at (RFC 3339 `TIME`)")
			fs.StringVar(&o.since, "since", "", "history from this `DURATION` ago (24h) or TIME until now")
			fs.DurationVar(&o.window, "window", 5*time.Minute, "with --at: show audit decisions this `DURATION` either side of TIME")
			fs.IntVar(&o.limit, "limit", 500, "show at most `N` audit rows")
			fs.BoolVar(&o.asJSON, "json", false, "print one JSON document")
			return func(ctx context.Context, args []string) error {
				if err := noArgs(args); err != nil {
					return err
				}
				return c.audit(ctx, o)
			}
		},
	}
}

type auditOptions struct {
	db        dbFlags
	principal string
	at, since string
	window    time.Duration
	limit     int
	asJSON    bool
}

const timeHint = "Times are RFC 3339, e.g. 2026-11-17T03:00:00Z; --since also takes a duration such as 24h."

// auditReport is the --json document.
type auditReport struct {
	Database       string         `json:"database,omitempty"`
	PrincipalARN   string         `json:"principal_arn,omitempty"`
	At             *time.Time     `json:"at,omitempty"`
	Since          *time.Time     `json:"since,omitempty"`
	Until          *time.Time     `json:"until,omitempty"`
	Leases         []leaseJSON    `json:"leases"`
	AuditFrom      time.Time      `json:"audit_from"`
	AuditTo        time.Time      `json:"audit_to"`
	Audit          []audit.Record `json:"audit"`
	AuditTruncated bool           `json:"audit_truncated"`
}

func (c *CLI) audit(ctx context.Context, o auditOptions) error {
	now := c.Now().UTC().Truncate(time.Microsecond)
	rep := auditReport{Database: o.db.database, PrincipalARN: o.principal, Leases: []leaseJSON{}, Audit: []audit.Record{}}
	switch {
	case o.at == "" && o.since == "":
		return usagef(timeHint, "one of --at TIME or --since DURATION is required")
	case o.at != "" && o.since != "":
		return usagef(timeHint, "--at and --since exclude each other")
	case o.window < 0 || o.window > 7*24*time.Hour:
		return usagef("", "--window %s must be between 0 and 168h", o.window)
	case o.limit < 1:
		return usagef("", "--limit must be at least 1")
	}
	if o.principal != "" {
		canonical, err := canonicalPrincipal(o.principal)
		if err != nil {
			return err
		}
		o.principal = canonical
	}
	filter := lease.HistoryFilter{Database: o.db.database, PrincipalARN: o.principal}
	if o.at != "" {
		at, err := parseInstant(o.at)
		if err != nil {
			return usagef(timeHint, "--at: %v", err)
		}
		rep.At = &at
		// live at the instant: issued_at <= at < least(expires_at, revoked_at)
		filter.From, filter.To = at, at
		rep.AuditFrom, rep.AuditTo = at.Add(-o.window), at.Add(o.window)
	} else {
		since, err := parseSince(o.since, now)
		if err != nil {
			return usagef(timeHint, "--since: %v", err)
		}
		rep.Since, rep.Until = &since, &now
		filter.From, filter.To = since, now
		rep.AuditFrom, rep.AuditTo = since, now
	}
	pool, err := c.openDB(ctx, o.db.url)
	if err != nil {
		return err
	}
	defer pool.Close()

	leases, err := lease.LeasesLive(ctx, pool, filter)
	if err != nil {
		return err
	}
	for _, l := range leases {
		rep.Leases = append(rep.Leases, toJSON(l, now))
	}
	auditFilter := filter
	auditFilter.From, auditFilter.To = rep.AuditFrom, rep.AuditTo
	rep.Audit, rep.AuditTruncated, err = lease.AuditRows(ctx, pool, auditFilter, o.limit)
	if err != nil {
		return err
	}
	if o.asJSON {
		enc := json.NewEncoder(c.Stdout)
		enc.SetEscapeHTML(false)
		return enc.Encode(rep)
	}
	return c.printAudit(rep, leases, o)
}

func (c *CLI) printAudit(rep auditReport, leases []*lease.Lease, o auditOptions) error {
	w := c.Stdout
	scope := "any database"
	if o.db.database != "" {
		scope = "database " + o.db.database
	}
	if o.principal != "" {
		scope = o.principal + " in " + scope
	}
	if rep.At != nil {
		fmt.Fprintf(w, "Leases live at %s (%s): %d\n", ts(*rep.At), scope, len(leases))
	} else {
		fmt.Fprintf(w, "Leases between %s and %s (%s): %d\n", ts(*rep.Since), ts(*rep.Until), scope, len(leases))
	}
	if len(leases) > 0 {
		rows := make([][]string, 0, len(leases))
		for _, l := range leases {
			rows = append(rows, []string{l.PrincipalARN, l.Session, l.Database + "/" + l.DBRole, l.Username, l.ID,
				ts(l.IssuedAt), ts(leaseEnd(l)), endedBy(l, c.Now())})
		}
		if err := table(w, []string{"PRINCIPAL", "FUNCTION", "DATABASE/ROLE", "USERNAME", "LEASE", "ISSUED", "END", "ENDED BY"}, rows); err != nil {
			return err
		}
	}
	if len(rep.Audit) == 0 && rep.At != nil {
		return nil // the audit part only when there is some
	}
	fmt.Fprintf(w, "\nAudit decisions from %s to %s (%s): %d\n", ts(rep.AuditFrom), ts(rep.AuditTo), scope, len(rep.Audit))
	if len(rep.Audit) == 0 {
		return nil
	}
	header := []string{"TIME", "EVENT", "DECISION", "REASON", "PRINCIPAL", "FUNCTION", "DATABASE/ROLE", "USERNAME", "POLICIES"}
	rows := make([][]string, 0, len(rep.Audit))
	for _, r := range rep.Audit {
		dbrole := r.Database
		if r.DBRole != "" {
			dbrole += "/" + r.DBRole
		}
		rows = append(rows, []string{ts(r.Time), r.Event, r.Decision, r.Reason, r.PrincipalARN, r.Session, dbrole, r.Username,
			strings.Join(r.Policies, ",")})
	}
	if o.principal != "" { // one principal: drop its column
		header = append(header[:4], header[5:]...)
		for i, r := range rows {
			rows[i] = append(r[:4], r[5:]...)
		}
	}
	if err := table(w, header, rows); err != nil {
		return err
	}
	if rep.AuditTruncated {
		fmt.Fprintf(w, "(only the first %d rows; raise --limit for more)\n", o.limit)
	}
	return nil
}

// endedBy says how a lease's access ended (or that it has not).
func endedBy(l *lease.Lease, now time.Time) string {
	switch {
	case l.RevokedAt != nil && !l.RevokedAt.After(l.ExpiresAt):
		return "revoke: " + l.RevokeReason
	case now.Before(l.ExpiresAt):
		return "(still live)"
	}
	return "expiry"
}

// parseInstant parses an RFC 3339 time, to PostgreSQL's microsecond precision.
func parseInstant(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	if t.Nanosecond()%1000 != 0 {
		return time.Time{}, fmt.Errorf("%q is more precise than PostgreSQL's microseconds", s)
	}
	return t.UTC(), nil
}

// parseSince parses a duration back from now, or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(strings.TrimSpace(s)); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%q must be a positive duration", s)
		}
		return now.Add(-d).Truncate(time.Second), nil
	}
	t, err := parseInstant(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (24h) nor an RFC 3339 time", s)
	}
	if t.After(now) {
		return time.Time{}, fmt.Errorf("%s is in the future", ts(t))
	}
	return t, nil
}
