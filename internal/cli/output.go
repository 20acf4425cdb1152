package cli

import (
	"encoding/json"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ephemera-sh/ephemera/broker/lease"
)

// table writes an aligned table: a header and rows of cells, two spaces
// between columns. Cells are made printable first.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(cells []string) {
		for i, c := range cells {
			if i > 0 {
				io.WriteString(tw, "\t")
			}
			io.WriteString(tw, cell(c))
		}
		io.WriteString(tw, "\n")
	}
	line(header)
	for _, r := range rows {
		line(r)
	}
	return tw.Flush()
}

// cell replaces control characters (tabs and newlines would break the
// table) and shows an empty value as "-".
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// ts formats a time as RFC 3339 in UTC, with a fraction only when it has one.
func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func tsp(t *time.Time) string {
	if t == nil {
		return ""
	}
	return ts(*t)
}

// Lease states.
const (
	stateLive    = "live"
	stateExpired = "expired" // expired, not yet revoked by the reaper
	stateRevoked = "revoked"
)

func leaseState(l *lease.Lease, now time.Time) string {
	switch {
	case l.RevokedAt != nil:
		return stateRevoked
	case now.Before(l.ExpiresAt):
		return stateLive
	}
	return stateExpired
}

// leaseJSON is a lease in --json output. It never holds a password.
type leaseJSON struct {
	LeaseID      string     `json:"lease_id"`
	PrincipalARN string     `json:"principal_arn"`
	Account      string     `json:"account"`
	Session      string     `json:"session"`
	Database     string     `json:"database"`
	DBRole       string     `json:"db_role"`
	Username     string     `json:"username"`
	IssuedAt     time.Time  `json:"issued_at"`
	ExpiresAt    time.Time  `json:"expires_at"`
	MaxExpiresAt time.Time  `json:"max_expires_at"`
	RevokedAt    *time.Time `json:"revoked_at,omitempty"`
	RevokeReason string     `json:"revoke_reason,omitempty"`
	// End is when access ended or will end: least(expires_at, revoked_at).
	End   time.Time `json:"end"`
	State string    `json:"state"`
	// Result is what revoke did with the lease.
	Result string `json:"result,omitempty"`
}

func toJSON(l *lease.Lease, now time.Time) leaseJSON {
	return leaseJSON{
		LeaseID: l.ID, PrincipalARN: l.PrincipalARN, Account: l.Account, Session: l.Session,
		Database: l.Database, DBRole: l.DBRole, Username: l.Username,
		IssuedAt: l.IssuedAt.UTC(), ExpiresAt: l.ExpiresAt.UTC(), MaxExpiresAt: l.MaxExpiresAt.UTC(),
		RevokedAt: l.RevokedAt, RevokeReason: l.RevokeReason, End: leaseEnd(l), State: leaseState(l, now),
	}
}

// leaseEnd is the instant access ended (or ends): least(expires_at, revoked_at).
func leaseEnd(l *lease.Lease) time.Time {
	if l.RevokedAt != nil && l.RevokedAt.Before(l.ExpiresAt) {
		return l.RevokedAt.UTC()
	}
	return l.ExpiresAt.UTC()
}

// jsonLines writes one JSON object per line.
func jsonLines[T any](w io.Writer, vs []T) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, v := range vs {
		if err := enc.Encode(v); err != nil {
			return err
		}
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
