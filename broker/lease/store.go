package lease

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// Lease is one issued credential's record. It holds no password.
type Lease struct {
	ID           string
	Database     string
	DBRole       string
	Username     string
	PrincipalARN string
	Account      string
	Session      string
	MemberOf     []string
	IssuedAt     time.Time
	ExpiresAt    time.Time
	MaxExpiresAt time.Time
	RevokedAt    *time.Time
	RevokeReason string
}

// Live reports whether the lease is neither revoked nor expired at now.
func (l *Lease) Live(now time.Time) bool { return l.RevokedAt == nil && now.Before(l.ExpiresAt) }

// Store is the lease store of one database. Safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	database string
	// beforeLeaseInsert, when set (tests only), runs inside the issue
	// transaction after the role exists and before the lease row is written.
	beforeLeaseInsert func(ctx context.Context) error
	hooks             *Hooks
}

// NewStore returns the store of the configured database named database,
// reached through the admin pool.
func NewStore(pool *pgxpool.Pool, database string) *Store {
	return &Store{pool: pool, database: database}
}

// Database is the configured name of the store's database.
func (s *Store) Database() string { return s.database }

// Pool is the admin pool (for audit writes and health checks).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// IssueRequest is everything Issue needs. The caller has verified the
// principal, decided the policy and validated the TTL.
type IssueRequest struct {
	DBRole       string
	MemberOf     []string
	Creation     []pgrole.Template
	Username     string
	Verifier     string // SCRAM-SHA-256 verifier of the password, never the password
	PrincipalARN string
	Account      string
	Session      string
	RequestID    string
	IssuedAt     time.Time
	TTL          time.Duration
	MaxTTL       time.Duration
	MaxLeases    int
	// Audit is the allow record of the issue; the store fills in the
	// lease's id and username and commits the row with the lease.
	Audit audit.Record
	// Nonce, when set, is the proof's nonce, recorded (until NonceExpires)
	// in the issue's transaction instead of a commit of its own: the nonce is
	// durable with the credential, and a nonce already recorded fails the
	// issue with ErrReplayed (the primary key decides between two concurrent
	// uses). A caller that sets it must record the nonces of requests that
	// end before Issue (denials, errors) with UseNonce. RenewRequest and
	// RevokeRequest take one the same way.
	Nonce        string
	NonceExpires time.Time
}

// ErrReplayed reports that a request's Nonce was recorded before.
var ErrReplayed = errors.New("lease: the proof's nonce was already used")

// insertNonce is the statement that records a request's Nonce.
const insertNonce = `INSERT INTO ephemera.nonces (nonce, expires_at) VALUES ($1, $2)`

// replayed reports whether err is the nonce's primary key refusing a
// nonce recorded before.
func replayed(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "nonces_pkey"
}

const leaseColumns = `lease_id::text, database, db_role, username, principal_arn, account, session, member_of,
	issued_at, expires_at, max_expires_at, revoked_at, coalesce(revoke_reason, '')`

// scanLease scans leaseColumns, then extra columns into extra.
func scanLease(row pgx.Row, extra ...any) (*Lease, error) {
	var l Lease
	dst := append([]any{&l.ID, &l.Database, &l.DBRole, &l.Username, &l.PrincipalARN, &l.Account, &l.Session, &l.MemberOf,
		&l.IssuedAt, &l.ExpiresAt, &l.MaxExpiresAt, &l.RevokedAt, &l.RevokeReason}, extra...)
	err := row.Scan(dst...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	l.IssuedAt, l.ExpiresAt, l.MaxExpiresAt = l.IssuedAt.UTC(), l.ExpiresAt.UTC(), l.MaxExpiresAt.UTC()
	if l.RevokedAt != nil {
		t := l.RevokedAt.UTC()
		l.RevokedAt = &t
	}
	return &l, nil
}

// CountLive counts the role's unrevoked, unexpired leases.
func (s *Store) CountLive(ctx context.Context, dbRole string, now time.Time) (int, error) {
	return countLive(ctx, s.pool, s.database, dbRole, now)
}

// CountLiveAll counts every unrevoked, unexpired lease of the database.
func (s *Store) CountLiveAll(ctx context.Context, now time.Time) (int, error) {
	var n int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FROM ephemera.leases
		WHERE database = $1 AND revoked_at IS NULL AND expires_at > $2`, s.database, now).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("lease: count live: %w", err)
	}
	return n, nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func countLive(ctx context.Context, q querier, database, dbRole string, now time.Time) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FROM ephemera.leases
		WHERE database = $1 AND db_role = $2 AND revoked_at IS NULL AND expires_at > $3`, database, dbRole, now).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("lease: count live: %w", err)
	}
	return n, nil
}

// Issue creates the role and its lease in one transaction, in two round
// trips: BEGIN, the role statements and the per-role lock as one
// simple-protocol query (they take no parameters: every value in them is
// quoted); then one pipelined batch with the nonce (when set), the lease
// insert — which fails with division_by_zero when max_leases, counted under
// the lock, is reached — the audit row that r.Audit describes, and COMMIT.
// The role, the lease and its audit row commit together or not at all: any
// failure leaves the transaction aborted, and it is rolled back.
func (s *Store) Issue(ctx context.Context, r IssueRequest) (*Lease, error) {
	if !pgrole.ValidUsername(r.Username) {
		return nil, errors.New("lease: issue: username is not a generated ephemera name")
	}
	if r.MaxLeases < 1 {
		return nil, errors.New("lease: issue: MaxLeases must be at least 1")
	}
	issued := r.IssuedAt.UTC().Truncate(time.Second)
	l := &Lease{
		Database: s.database, DBRole: r.DBRole, Username: r.Username, PrincipalARN: r.PrincipalARN,
		Account: r.Account, Session: r.Session, MemberOf: append([]string(nil), r.MemberOf...),
		IssuedAt: issued, ExpiresAt: issued.Add(r.TTL), MaxExpiresAt: issued.Add(r.MaxTTL),
	}
	id, err := NewID()
	if err != nil {
		return nil, err
	}
	l.ID = id
	vals := pgrole.Values{Name: r.Username, Password: r.Verifier, Expiration: l.ExpiresAt}
	var roleSQL strings.Builder
	roleSQL.WriteString("BEGIN;\n")
	for i, t := range r.Creation {
		sql, err := t.Render(vals)
		if err != nil {
			return nil, fmt.Errorf("lease: issue: creation[%d]: %w", i, err)
		}
		roleSQL.WriteString(sql + ";\n")
	}
	for _, g := range r.MemberOf {
		sql, err := pgrole.GrantMembership(g, r.Username)
		if err != nil {
			return nil, fmt.Errorf("lease: issue: member_of %q: %w", g, err)
		}
		roleSQL.WriteString(sql + ";\n")
	}
	// Every ephemeral user is marked as this deployment's: the sweep drops
	// only marked roles, never one that merely looks like ours.
	mark, err := s.markStatement(ctx, r.Username)
	if err != nil {
		return nil, fmt.Errorf("lease: issue: %w", err)
	}
	roleSQL.WriteString(mark + ";\n")
	// max_leases is decided under a per-role lock taken after the costly
	// statements above, so issues of one role serialize only from here on.
	lockKey, err := pgrole.QuoteLiteral("ephemera.leases/" + s.database + "/" + r.DBRole)
	if err != nil {
		return nil, fmt.Errorf("lease: issue: %w", err)
	}
	roleSQL.WriteString("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(" + lockKey + ", 0))")

	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease: issue: %w", err)
	}
	defer conn.Release()
	err = s.issueIn(ctx, conn.Conn(), roleSQL.String(), l, r)
	if err != nil && conn.Conn().PgConn().TxStatus() != 'I' {
		// A transaction left open or aborted is rolled back (or, if even
		// that fails, the connection is closed: the server then aborts it).
		if _, rerr := conn.Exec(context.WithoutCancel(ctx), "ROLLBACK"); rerr != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx))
		}
	}
	switch {
	case errors.Is(err, ErrLimit), errors.Is(err, ErrReplayed):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("lease: issue: %w", err)
	}
	return l, nil
}

// issueIn runs Issue's two round trips on conn.
func (s *Store) issueIn(ctx context.Context, conn *pgx.Conn, roleSQL string, l *Lease, r IssueRequest) error {
	// No arguments: pgx sends it with the simple protocol, and the
	// statements (unique per user) never enter the statement cache.
	if _, err := conn.Exec(ctx, roleSQL); err != nil {
		return fmt.Errorf("role statements: %w", redactPgError(err))
	}
	if s.beforeLeaseInsert != nil {
		if err := s.beforeLeaseInsert(ctx); err != nil {
			return err
		}
	}
	b := &pgx.Batch{}
	if r.Nonce != "" {
		b.Queue(insertNonce, r.Nonce, r.NonceExpires)
	}
	b.Queue(`INSERT INTO ephemera.leases (lease_id, database, db_role, username, principal_arn,
		account, session, member_of, issued_at, expires_at, max_expires_at, request_id)
		SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
		WHERE 1 / (SELECT (count(*) < $13)::int FROM (SELECT 1 FROM ephemera.leases
			WHERE database = $2 AND db_role = $3 AND revoked_at IS NULL AND expires_at > $9 LIMIT $13) live) = 1`,
		l.ID, l.Database, l.DBRole, l.Username, l.PrincipalARN, l.Account, l.Session, l.MemberOf,
		l.IssuedAt, l.ExpiresAt, l.MaxExpiresAt, r.RequestID, r.MaxLeases)
	row := r.Audit
	row.Decision, row.Username, row.LeaseID = audit.Allow, l.Username, l.ID
	queueAudit(b, row)
	b.Queue("COMMIT")
	err := conn.SendBatch(ctx, b).Close()
	var pe *pgconn.PgError
	switch {
	case err == nil && conn.PgConn().TxStatus() == 'I':
		return nil
	case err == nil:
		return errors.New("the transaction did not commit")
	case errors.As(err, &pe) && pe.Code == "22012": // the max_leases guard
		return ErrLimit
	case replayed(err):
		return ErrReplayed
	}
	return fmt.Errorf("insert lease: %w", redactPgError(err))
}

// Get returns the lease with id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*Lease, error) {
	l, err := scanLease(s.pool.QueryRow(ctx, "SELECT "+leaseColumns+" FROM ephemera.leases WHERE lease_id = $1 AND database = $2", id, s.database))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("lease: get: %w", err)
	}
	return l, err
}

// RenewRequest is everything Renew needs. The caller has verified the
// holder, decided the policy and validated the TTL.
type RenewRequest struct {
	ID      string
	TTL     time.Duration
	Renewal []pgrole.Template
	// Audit is the allow record; the store commits it with the renewal.
	Audit audit.Record
	// Nonce and NonceExpires: as in IssueRequest, recorded in the renewal's
	// transaction.
	Nonce        string
	NonceExpires time.Time
}

// Renew extends the lease to now+ttl, capped at its max expiry, moving the
// role's VALID UNTIL and writing the audit row in the same transaction.
// "Now" is the database's clock, read under the lease's row lock: a renew
// serialized after a revocation's first step sees it and fails with
// ErrRevoked, whatever the callers' clocks say.
func (s *Store) Renew(ctx context.Context, r RenewRequest) (*Lease, error) {
	var out *Lease
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if r.Nonce != "" {
			if _, err := tx.Exec(ctx, insertNonce, r.Nonce, r.NonceExpires); replayed(err) {
				return ErrReplayed
			} else if err != nil {
				return fmt.Errorf("nonce: %w", err)
			}
		}
		var now time.Time
		var begun bool
		row := tx.QueryRow(ctx, "SELECT "+leaseColumns+`, revoke_started_at IS NOT NULL, pg_catalog.now()
			FROM ephemera.leases WHERE lease_id = $1 AND database = $2 FOR UPDATE`, r.ID, s.database)
		l, err := scanLease(row, &begun, &now)
		if err != nil {
			return err
		}
		if l.RevokedAt != nil || begun {
			return ErrRevoked
		}
		now = now.UTC().Truncate(time.Second)
		if !now.Before(l.ExpiresAt) {
			return ErrExpired
		}
		expires := now.Add(r.TTL)
		if expires.After(l.MaxExpiresAt) {
			expires = l.MaxExpiresAt
		}
		if expires.Before(l.ExpiresAt) {
			expires = l.ExpiresAt // a renewal never shortens a lease
		}
		for i, t := range r.Renewal {
			sql, err := t.Render(pgrole.Values{Name: l.Username, Expiration: expires})
			if err != nil {
				return fmt.Errorf("renewal[%d]: %w", i, err)
			}
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf("renewal[%d]: %w", i, redactPgError(err))
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE ephemera.leases SET expires_at = $2 WHERE lease_id = $1", r.ID, expires); err != nil {
			return fmt.Errorf("update lease: %w", err)
		}
		rec := r.Audit
		rec.Decision, rec.Username, rec.LeaseID = audit.Allow, l.Username, l.ID
		if err := insertAudit(ctx, tx, rec); err != nil {
			return err
		}
		l.ExpiresAt = expires
		out = l
		return nil
	})
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrRevoked), errors.Is(err, ErrExpired), errors.Is(err, ErrReplayed):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("lease: renew: %w", err)
	}
	return out, nil
}

func disableLogin(ctx context.Context, tx pgx.Tx, username string) error {
	var exists bool
	if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1)", username).Scan(&exists); err != nil {
		return fmt.Errorf("find role: %w", err)
	}
	if !exists {
		return nil
	}
	ident, err := pgrole.QuoteIdentifier(username)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "ALTER ROLE "+ident+" NOLOGIN"); err != nil {
		return fmt.Errorf("disable login: %w", redactPgError(err))
	}
	return nil
}

// Querier runs queries (a pool, a connection or a transaction).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// TerminateSessions ends every backend of username and waits until they are
// gone (up to 5 s). The admin role needs pg_signal_backend.
func TerminateSessions(ctx context.Context, q Querier, username string) error {
	return TerminateAll(ctx, q, []string{username})
}

// TerminateAll signals every backend of the users at once, then polls
// pg_stat_activity until they are gone (up to 5 s). Signalling all first
// matters: pg_terminate_backend(pid, timeout) waits in 100 ms steps, which
// made a reaper batch with live sessions ten times slower (make bench).
func TerminateAll(ctx context.Context, q Querier, usernames []string) error {
	if len(usernames) == 0 {
		return nil
	}
	rows, err := q.Query(ctx, `SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity
		WHERE usename = ANY($1) AND pid <> pg_catalog.pg_backend_pid()`, usernames)
	if err != nil {
		return fmt.Errorf("terminate sessions: %w", err)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("terminate sessions: %w", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		// Inside a transaction pg_stat_activity is a snapshot taken at first
		// use (stats_fetch_consistency): drop it so each poll sees the present.
		clear, err := q.Query(ctx, "SELECT pg_catalog.pg_stat_clear_snapshot()")
		if err != nil {
			return fmt.Errorf("terminate sessions: %w", err)
		}
		clear.Close()
		rows, err := q.Query(ctx, `SELECT pid FROM pg_catalog.pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_catalog.pg_backend_pid()`, usernames)
		if err != nil {
			return fmt.Errorf("terminate sessions: %w", err)
		}
		pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("terminate sessions: %w", err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("terminate sessions: backends %v still running after 5s", pids)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("terminate sessions: %w", ctx.Err())
		case <-time.After(wait):
		}
	}
}

// LiveByPrincipal returns the principal's unrevoked leases (expired ones
// included: their roles may still exist until the reaper runs). The ARN is
// compared ignoring case, as IAM compares role names.
func (s *Store) LiveByPrincipal(ctx context.Context, principalARN string) ([]*Lease, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+leaseColumns+` FROM ephemera.leases
		WHERE pg_catalog.lower(principal_arn) = pg_catalog.lower($1) AND database = $2 AND revoked_at IS NULL
		ORDER BY issued_at`, principalARN, s.database)
	if err != nil {
		return nil, fmt.Errorf("lease: by principal: %w", err)
	}
	defer rows.Close()
	var out []*Lease
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("lease: by principal: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lease: by principal: %w", err)
	}
	return out, nil
}

// UseNonce records a proof nonce until expires; false means it was used before.
func (s *Store) UseNonce(ctx context.Context, nonce string, expires time.Time) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO ephemera.nonces (nonce, expires_at) VALUES ($1, $2)
		ON CONFLICT (nonce) DO NOTHING`, nonce, expires)
	if err != nil {
		return false, fmt.Errorf("lease: nonce: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// NonceSeen reports whether a proof nonce was recorded, without recording
// it (attest.NonceReader): the broker reads it before it asks STS, and
// records the nonce with the credential it issues.
func (s *Store) NonceSeen(ctx context.Context, nonce string) (bool, error) {
	var seen bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM ephemera.nonces WHERE nonce = $1)`, nonce).Scan(&seen); err != nil {
		return false, fmt.Errorf("lease: nonce seen: %w", err)
	}
	return seen, nil
}

// NewID returns a random (version 4) UUID.
func NewID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("lease: uuid: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
