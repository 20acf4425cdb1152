package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// lit quotes s as an SQL literal (pgrole refuses only NUL bytes, which
// nothing here contains).
func lit(s string) string {
	q, err := pgrole.QuoteLiteral(s)
	if err != nil {
		panic(err)
	}
	return q
}

func ident(s string) string {
	q, err := pgrole.QuoteIdentifier(s)
	if err != nil {
		panic(err)
	}
	return q
}

func tsLit(t time.Time) string { return lit(t.UTC().Format(time.RFC3339Nano)) + "::timestamptz" }

// leaseInsertLit is the lease INSERT with literal values.
func leaseInsertLit(id, db, user string, issued, expires, maxExpires time.Time, requestID string) string {
	return fmt.Sprintf(`INSERT INTO ephemera.leases (lease_id, database, db_role, username, principal_arn,
		account, session, member_of, issued_at, expires_at, max_expires_at, request_id)
		VALUES (%s, %s, %s, %s, %s, %s, %s, ARRAY[%s], %s, %s, %s, %s)`,
		lit(id), lit(db), lit(dbRole), lit(user), lit(principalARN), lit(account), lit(workFunction), lit(group),
		tsLit(issued), tsLit(expires), tsLit(maxExpires), lit(requestID))
}

// roleSQL is the CREATE ROLE (DefaultCreation, as the broker renders it) and
// the membership grant of a new user.
func roleSQL(user, verifier string, validUntil time.Time) (string, string) {
	create, err := pgrole.DefaultCreation.Render(pgrole.Values{Name: user, Password: verifier, Expiration: validUntil})
	if err != nil {
		panic(err)
	}
	grant, err := pgrole.GrantMembership(group, user)
	if err != nil {
		panic(err)
	}
	return create, grant
}

func newNames() (user, id string) {
	user, err := pgrole.NewUsername(dbRole)
	if err != nil {
		panic(err)
	}
	if id, err = lease.NewID(); err != nil {
		panic(err)
	}
	return user, id
}

// ---------------------------------------------------------------------------
// Housekeeping

// cleanup drops every ephemera role and empties the ephemera tables, so that
// each phase starts from zero leases, then checkpoints so that no checkpoint
// of the previous phase's writes lands in the next one.
func (e *env) cleanup(ctx context.Context) error { return e.cleanupKeep(ctx, "") }

// cleanupKeep is cleanup that keeps the fixtures whose leases carry
// request id keep (and their roles).
func (e *env) cleanupKeep(ctx context.Context, keep string) error {
	if _, err := e.super.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename LIKE 'eph\_%'`); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	rows, err := e.super.Query(ctx, `SELECT rolname FROM pg_roles r WHERE rolname LIKE 'eph\_%' AND NOT EXISTS (
		SELECT 1 FROM ephemera.leases l WHERE l.username = r.rolname AND l.request_id = $1)`, keep)
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	for len(names) > 0 {
		n := min(len(names), 2000)
		var sb strings.Builder
		sb.WriteString("BEGIN;")
		for _, r := range names[:n] {
			sb.WriteString("DROP ROLE IF EXISTS " + ident(r) + ";")
		}
		sb.WriteString("COMMIT")
		if _, err := e.super.Exec(ctx, sb.String()); err != nil {
			return fmt.Errorf("cleanup: drop roles: %w", err)
		}
		names = names[n:]
	}
	first := "TRUNCATE ephemera.leases, ephemera.audit_log, ephemera.nonces, ephemera.orphans"
	if keep != "" {
		first = "DELETE FROM ephemera.leases WHERE request_id <> " + lit(keep) + "; TRUNCATE ephemera.audit_log, ephemera.nonces, ephemera.orphans"
	}
	for _, s := range []string{
		first,
		"VACUUM ANALYZE ephemera.leases",
		"VACUUM pg_authid",
		"VACUUM pg_auth_members",
		"CHECKPOINT",
	} {
		if _, err := e.super.Exec(ctx, s); err != nil {
			return fmt.Errorf("cleanup: %s: %w", s, err)
		}
	}
	return nil
}

type fixture struct{ leaseID, user string }

// makeFixtures creates n login roles with their leases in database db,
// expiring at expires (the roles stay valid for logins for an hour), in
// transactions of 250, with the fast SCRAM verifier of fixturePassword.
func (e *env) makeFixtures(ctx context.Context, db string, n int, expires time.Time) ([]fixture, error) {
	now := time.Now().UTC().Truncate(time.Second)
	issued := now.Add(-time.Minute)
	maxExp := expires
	if now.After(maxExp) {
		maxExp = now
	}
	maxExp = maxExp.Add(time.Hour)
	validUntil := now.Add(2 * time.Hour)
	out := make([]fixture, 0, n)
	for len(out) < n {
		var sb strings.Builder
		sb.WriteString("BEGIN;")
		for range min(250, n-len(out)) {
			user, id := newNames()
			create, grant := roleSQL(user, e.fixtureVerifier, validUntil)
			sb.WriteString(create + ";" + grant + ";" + leaseInsertLit(id, db, user, issued, expires, maxExp, fixtureRequestID) + ";")
			out = append(out, fixture{leaseID: id, user: user})
		}
		sb.WriteString("COMMIT")
		if _, err := e.admin.Exec(ctx, sb.String()); err != nil {
			return nil, fmt.Errorf("fixtures: %w", err)
		}
	}
	return out, nil
}

// queue hands out fixtures to concurrent workers.
func queue(fs []fixture) func() (fixture, bool) {
	var i atomic.Int64
	return func() (fixture, bool) {
		k := i.Add(1) - 1
		if k >= int64(len(fs)) {
			return fixture{}, false
		}
		return fs[k], true
	}
}

// ---------------------------------------------------------------------------
// The floor: what PostgreSQL itself allows.

// floorIssue is the bare SQL of an issue in one round trip: one
// multi-statement simple query holding BEGIN, CREATE ROLE ... VALID UNTIL,
// the membership grant, the lease insert and COMMIT.
func floorIssue(pool *pgxpool.Pool, db, verifier string) func(context.Context) error {
	return func(ctx context.Context) error {
		user, id := newNames()
		issued := time.Now().UTC().Truncate(time.Second)
		create, grant := roleSQL(user, verifier, issued.Add(15*time.Minute))
		sql := "BEGIN;" + create + ";" + grant + ";" +
			leaseInsertLit(id, db, user, issued, issued.Add(15*time.Minute), issued.Add(time.Hour), "floor") + ";COMMIT"
		_, err := pool.Exec(ctx, sql)
		return err
	}
}

const leaseInsert = `INSERT INTO ephemera.leases (lease_id, database, db_role, username, principal_arn,
			account, session, member_of, issued_at, expires_at, max_expires_at, request_id)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`

// floorIssueStatements is the same transaction one statement per round
// trip (BEGIN, CREATE, GRANT, INSERT, COMMIT), as pgx.BeginFunc does it.
func floorIssueStatements(pool *pgxpool.Pool, db, verifier string) func(context.Context) error {
	return func(ctx context.Context) error {
		user, id := newNames()
		issued := time.Now().UTC().Truncate(time.Second)
		create, grant := roleSQL(user, verifier, issued.Add(15*time.Minute))
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, create); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, grant); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, leaseInsert, id, db, dbRole, user, principalARN, account, workFunction,
				[]string{group}, issued, issued.Add(15*time.Minute), issued.Add(time.Hour), "floor")
			return err
		})
	}
}

// floorRevoke is the bare SQL of a revocation in one round trip: end the
// user's sessions, drop the role, mark the lease revoked.
func floorRevoke(pool *pgxpool.Pool, next func() (fixture, bool)) func(context.Context) error {
	return func(ctx context.Context) error {
		f, ok := next()
		if !ok {
			return errExhausted
		}
		sql := "BEGIN;SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = " + lit(f.user) +
			";DROP ROLE " + ident(f.user) +
			";UPDATE ephemera.leases SET revoked_at = now(), revoke_reason = 'floor' WHERE lease_id = " + lit(f.leaseID) +
			";COMMIT"
		_, err := pool.Exec(ctx, sql)
		return err
	}
}

// ---------------------------------------------------------------------------
// Replays of the broker's database work for one issue, without HTTP, STS or
// policy, to attribute the gap to the floor and to try tunings without
// touching the broker.

type replay struct {
	name        string
	op          func(context.Context) error
	syncCommits int
}

// replays returns the variants over database db. sync is the admin pool;
// async has synchronous_commit=off on its connections.
func (e *env) replays(db string, sync, async *pgxpool.Pool) ([]replay, error) {
	verifier, err := pgrole.SCRAMVerifier(fixturePassword, fastIters)
	if err != nil {
		return nil, err
	}
	stSync, stAsync := lease.NewStore(sync, db), lease.NewStore(async, db)
	nonce := func(ctx context.Context, st *lease.Store) error {
		n, err := attest.NewNonce()
		if err != nil {
			return err
		}
		fresh, err := st.UseNonce(ctx, n, time.Now().Add(5*time.Minute))
		if err == nil && !fresh {
			err = fmt.Errorf("nonce reused")
		}
		return err
	}
	rec := func(user, id string) audit.Record {
		return audit.Record{Time: time.Now(), RequestID: id, Event: "issue", Decision: "allow", PrincipalARN: principalARN,
			Account: account, Session: workFunction, Database: db, DBRole: dbRole, Username: user, LeaseID: id,
			TTLSeconds: 900, Policies: []string{"orders-api-uses-orders"}, LatencyMS: 1}
	}
	// asBroker is the broker's sequence, through the same exported store
	// functions the broker calls: nonce, early count, issue transaction,
	// reap-on-issue (3 leases), audit row.
	asBroker := func(nonceStore *lease.Store, auditPool *pgxpool.Pool) func(context.Context) error {
		return func(ctx context.Context) error {
			if err := nonce(ctx, nonceStore); err != nil {
				return err
			}
			now := time.Now()
			if _, err := stSync.CountLive(ctx, dbRole, now); err != nil {
				return err
			}
			user, _ := newNames()
			l, err := stSync.Issue(ctx, lease.IssueRequest{DBRole: dbRole, MemberOf: []string{group},
				Creation: []pgrole.Template{pgrole.DefaultCreation}, Username: user, Verifier: verifier,
				PrincipalARN: principalARN, Account: account, Session: workFunction, RequestID: "replay",
				IssuedAt: now, TTL: 15 * time.Minute, MaxTTL: time.Hour, MaxLeases: 1000000})
			if err != nil {
				return err
			}
			if _, err := stSync.ReapExpired(ctx, time.Now(), 3, "expired", nil); err != nil {
				return err
			}
			return lease.NewStore(auditPool, db).AppendAudit(ctx, rec(user, l.ID))
		}
	}
	// pipelined is the same work in two round trips: the nonce, then one
	// multi-statement transaction (role, grant, per-role lock, max_leases
	// check that aborts the transaction, lease row and audit row together);
	// no early count and no reap on the request path.
	pipelined := func(nonceStore *lease.Store) func(context.Context) error {
		return func(ctx context.Context) error {
			if err := nonce(ctx, nonceStore); err != nil {
				return err
			}
			user, id := newNames()
			issued := time.Now().UTC().Truncate(time.Second)
			create, grant := roleSQL(user, verifier, issued.Add(15*time.Minute))
			r := rec(user, id)
			sql := "BEGIN;" + create + ";" + grant +
				";SELECT pg_advisory_xact_lock(hashtextextended(" + lit("ephemera.leases/"+db+"/"+dbRole) + ", 0))" +
				";DO $$BEGIN IF (SELECT count(*) FROM ephemera.leases WHERE database = " + lit(db) + " AND db_role = " + lit(dbRole) +
				" AND revoked_at IS NULL AND expires_at > now()) >= 1000000 THEN RAISE EXCEPTION 'lease limit'; END IF; END$$;" +
				leaseInsertLit(id, db, user, issued, issued.Add(15*time.Minute), issued.Add(time.Hour), "replay") +
				";INSERT INTO ephemera.audit_log (time, request_id, event, decision, principal_arn, account, session, database, db_role, username, lease_id, ttl_seconds, policies, latency_ms) VALUES (" +
				tsLit(r.Time) + "," + lit(r.RequestID) + ",'issue','allow'," + lit(r.PrincipalARN) + "," + lit(r.Account) + "," +
				lit(r.Session) + "," + lit(db) + "," + lit(dbRole) + "," + lit(user) + "," + lit(id) + ",900,ARRAY['orders-api-uses-orders'],1)" +
				";COMMIT"
			_, err := sync.Exec(ctx, sql)
			return err
		}
	}
	return []replay{
		{"as the broker does it (its store calls)", asBroker(stSync, sync), 3},
		{"same, nonce+audit synchronous_commit=off", asBroker(stAsync, async), 1},
		{"pipelined: nonce; role+lease+audit in 1 trip", pipelined(stSync), 2},
		{"pipelined, nonce synchronous_commit=off", pipelined(stAsync), 1},
	}, nil
}

// poolWith opens a pool of the admin role with a settings hook.
func (e *env) poolWith(ctx context.Context, maxConns int32, adjust func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(e.adminDSN)
	if err != nil {
		return nil, fmt.Errorf("admin DSN does not parse")
	}
	pc.MaxConns = maxConns
	if adjust != nil {
		adjust(pc)
	}
	return pgxpool.NewWithConfig(ctx, pc)
}

// ---------------------------------------------------------------------------
// Round-trip counting: a loopback TCP proxy between a broker and PostgreSQL
// that counts client→server flights (each read of what the client sent is
// one flight; pgx writes each message group in one write and then waits).

type countingProxy struct {
	ln      net.Listener
	target  string
	flights atomic.Int64
}

func startProxy(target string) (*countingProxy, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &countingProxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
	return p, nil
}

func (p *countingProxy) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

func (p *countingProxy) handle(c net.Conn) {
	s, err := net.Dial("tcp4", p.target)
	if err != nil {
		c.Close()
		return
	}
	go func() {
		_, _ = io.Copy(c, s)
		c.Close()
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			p.flights.Add(1)
			if _, werr := s.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	s.Close()
}
