package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

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
// Replays of the broker's database work for one issue, without HTTP, STS or
// policy, to attribute the gap to the floor and to try tunings without
// touching the broker.

type replay struct {
	name        string
	op          func(context.Context) error
	syncCommits int
	// around, when set, runs before the variant's measured windows with
	// on true and after them with on false (a schema change under test).
	around func(ctx context.Context, on bool) error
}

// replays returns the variants over database db (scram 64, so that the
// role's verifier check weighs little and the rest shows), all through the
// admin pool: the broker's own sequence of store calls (the nonce in the
// issue's transaction), the same with the audit index that migration 8
// dropped, and the nonce committed on its own as the broker did before.
func (e *env) replays(db string, pool *pgxpool.Pool) ([]replay, error) {
	verifier, err := pgrole.SCRAMVerifier(fixturePassword, fastIters)
	if err != nil {
		return nil, err
	}
	st := lease.NewStore(pool, db)
	rec := func(user string) audit.Record {
		return audit.Record{Time: time.Now(), RequestID: "replay", Event: "issue", PrincipalARN: principalARN,
			Account: account, Session: workFunction, Database: db, DBRole: dbRole, Username: user,
			TTLSeconds: 900, Policies: []string{"orders-api-uses-orders"}, LatencyMS: 1}
	}
	issue := func(ctx context.Context, nonce string) error {
		now := time.Now()
		user, _ := newNames()
		r := lease.IssueRequest{DBRole: dbRole, MemberOf: []string{group},
			Creation: []pgrole.Template{pgrole.DefaultCreation}, Username: user, Verifier: verifier,
			PrincipalARN: principalARN, Account: account, Session: workFunction, RequestID: "replay",
			IssuedAt: now, TTL: 15 * time.Minute, MaxTTL: time.Hour, MaxLeases: 1000000, Audit: rec(user)}
		if nonce != "" {
			r.Nonce, r.NonceExpires = nonce, now.Add(5*time.Minute)
		}
		_, err := st.Issue(ctx, r)
		return err
	}
	// twoCommits is how the broker recorded the nonce before: a commit of
	// its own, then the issue transaction with its audit row.
	twoCommits := func(ctx context.Context) error {
		n, err := attest.NewNonce()
		if err != nil {
			return err
		}
		if fresh, err := st.UseNonce(ctx, n, time.Now().Add(5*time.Minute)); err != nil || !fresh {
			return errors.Join(err, errors.New("nonce reused"))
		}
		return issue(ctx, "")
	}
	// asBroker is the broker's sequence of store calls when the replay
	// database is the issue's: the nonce in the issue's transaction.
	asBroker := func(ctx context.Context) error {
		n, err := attest.NewNonce()
		if err != nil {
			return err
		}
		return issue(ctx, n)
	}
	return []replay{
		{name: "as the broker does it: nonce in Issue's transaction", op: asBroker, syncCommits: 1},
		{name: "the same with index audit_log_by_principal (dropped by migration 8)", op: asBroker, syncCommits: 1,
			around: func(ctx context.Context, on bool) error { return e.formerAuditPrincipalIndex(ctx, on) }},
		{name: "the nonce committed alone first (UseNonce; Issue), as before", op: twoCommits, syncCommits: 2},
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
