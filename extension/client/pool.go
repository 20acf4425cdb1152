package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultRetireMargin is how long before its credential expires a pooled
// connection stops being handed out, unless WithRetireMargin says otherwise.
const DefaultRetireMargin = 30 * time.Second

// PoolOption configures PoolConfig.
type PoolOption func(*poolSettings)

type poolSettings struct {
	margin    time.Duration
	authRetry bool
	now       func() time.Time // tests move the clock
}

// WithRetireMargin sets how long before its credential expires a
// connection is retired (no longer handed out; a query already running on
// it is never interrupted). Default: 30 s. It should exceed your longest
// query, so that no session outlives its lease. A negative value means 0.
func WithRetireMargin(d time.Duration) PoolOption {
	return func(s *poolSettings) { s.margin = max(d, 0) }
}

// WithAuthRetry turns the check-and-retry of each new connection's
// credential on or off. Default: on. BeforeConnect then opens a short-lived
// connection first; when the database refuses the login (SQLSTATE 28P01 or
// 28000) it asks the Source for a new credential, once, and the pool
// connects with that. The price is one extra connection handshake per new
// pooled connection (not per query). Off: a refused login fails the
// Acquire, and the query.
func WithAuthRetry(enabled bool) PoolOption {
	return func(s *poolSettings) { s.authRetry = enabled }
}

// DefaultMaxConns is the pool size PoolConfig sets: what one Lambda
// invocation needs (one connection, and one more while a retiring
// connection is replaced).
const DefaultMaxConns = 2

// PoolConfig returns a pgxpool.Config for the credential name of src,
// built from its current credential (its DSN, or its fields when the DSN is
// empty), whose hooks keep the pool working while credentials rotate:
//
//   - BeforeConnect asks src for the current credential (src.Credentials:
//     the extension renews or replaces it by its own refresh margin) and
//     connects with its user, password, host, port and database; with
//     WithAuthRetry (the default) it first tries the login on a throwaway
//     connection and, if the database refuses it (28P01, 28000), calls
//     src.Refresh once, so the pool's own connect is the retry. Cost: one
//     extra login per new pooled connection. src.Refresh is called for
//     nothing else: a credential with less than the retire margin left (as
//     every one of a role whose TTL is shorter than the margin) is used as
//     it is, and its connection retires early (see PrepareConn), rather
//     than making the broker create a new user for every connect.
//   - PrepareConn, called by every Acquire, retires a connection whose
//     credential expires within the margin (default 30 s), unless src shows
//     that its lease was renewed; pgxpool then opens a new connection with
//     the current credential. A connection is never closed while in use.
//   - MaxConnLifetime is at most the credential's remaining lifetime minus
//     the margin (at least 1 minute), with MaxConnLifetimeJitter a tenth of
//     it, so idle connections are recycled too.
//   - MaxConns is DefaultMaxConns (2), not pgxpool's 4-or-more: a Lambda
//     sandbox runs one invocation at a time, and the database's
//     max_connections is shared by every sandbox of every function
//     (concurrency × MaxConns). Raise it only for an invocation that runs
//     queries in parallel.
//
// Adjust other fields (MaxConns, ...) freely. If you set your own
// BeforeConnect or PrepareConn, call the ones PoolConfig installed from
// yours, or rotation stops working. PoolConfig makes no connection.
func PoolConfig(ctx context.Context, src Source, name string, opts ...PoolOption) (*pgxpool.Config, error) {
	s := poolSettings{margin: DefaultRetireMargin, authRetry: true, now: time.Now}
	for _, o := range opts {
		o(&s)
	}
	if src == nil {
		return nil, errors.New("client: PoolConfig: nil Source")
	}
	r := &rotator{src: src, name: name, poolSettings: s}
	cred, err := r.fetch(ctx, r.src.Credentials)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dsn(cred))
	if err != nil {
		// Not %w: the parse error may quote the connection string.
		return nil, fmt.Errorf("client: credential %q: its DSN is not a valid connection string", name)
	}
	r.base = cfg.ConnConfig.Copy()
	cfg.BeforeConnect = r.beforeConnect
	cfg.PrepareConn = r.prepareConn
	cfg.MaxConns = DefaultMaxConns

	if !cred.ExpiresAt.IsZero() {
		bound := min(cred.ExpiresAt.Sub(r.now())-r.margin, cfg.MaxConnLifetime)
		jitter := max(bound/10, 0)
		cfg.MaxConnLifetime = max(bound-jitter, time.Minute)
		cfg.MaxConnLifetimeJitter = jitter
	}
	return cfg, nil
}

// ConnExpiry reports when the credential that conn logged in with expires
// (after any renewal PrepareConn has seen), for connections of a pool made
// from PoolConfig.
func ConnExpiry(conn *pgx.Conn) (time.Time, bool) {
	if conn == nil || conn.PgConn() == nil {
		return time.Time{}, false
	}
	st, ok := conn.PgConn().CustomData()[stateKey].(*connState)
	if !ok || st.expiresAt.IsZero() {
		return time.Time{}, false
	}
	return st.expiresAt, true
}

// stateKey is where a connection's credential state lives in
// pgconn.PgConn.CustomData.
const stateKey = "github.com/ephemera-sh/ephemera/extension/client.state"

// connState is what a pooled connection remembers of its credential. It is
// written at connect time and by PrepareConn, both while the connection is
// held by one goroutine.
type connState struct {
	leaseID   string
	username  string
	expiresAt time.Time
	retireAt  time.Time // zero: never
}

// rotator holds the pool hooks' state. Its fields are set once; latest is
// the only one that changes.
type rotator struct {
	poolSettings
	src    Source
	name   string
	base   *pgx.ConnConfig            // as parsed from the first credential
	latest atomic.Pointer[Credential] // the newest credential seen from src
}

func (r *rotator) fetch(ctx context.Context, get func(context.Context, string) (*Credential, error)) (*Credential, error) {
	cred, err := get(ctx, r.name)
	if err != nil {
		return nil, err
	}
	if cred == nil {
		return nil, fmt.Errorf("client: source returned no credential for %q", r.name)
	}
	r.latest.Store(cred)
	return cred, nil
}

// beforeConnect is pgxpool's BeforeConnect: it puts the current credential
// into cc (a per-connection copy) and, with auth retry, makes sure the
// database accepts it.
//
// Why a probe: pgxpool returns a failed connect straight to the Acquire
// that caused it, and pgconn stops at the first 28P01; no pgx hook can
// retry a refused login inside one Acquire. So the login is tried here
// first, on a connection that is closed at once, and the pool's own connect
// is the retry.
func (r *rotator) beforeConnect(ctx context.Context, cc *pgx.ConnConfig) error {
	// The normal read, never a forced refresh: the extension keeps the
	// credential fresh by its own margin, and a refresh always makes the
	// broker create a new user.
	cred, err := r.fetch(ctx, r.src.Credentials)
	if err != nil {
		return err
	}
	r.apply(cc, cred)
	if r.authRetry {
		if err := probe(ctx, cc); err != nil {
			if !isAuthFailure(err) {
				return fmt.Errorf("client: connect: %w", err)
			}
			if cred, err = r.fetch(ctx, r.src.Refresh); err != nil {
				return err
			}
			r.apply(cc, cred)
		}
	}
	r.track(cc, cred)
	return nil
}

// apply sets the credential's login and address on cc.
func (r *rotator) apply(cc *pgx.ConnConfig, cred *Credential) {
	cc.User = cred.Username
	cc.Password = cred.Password
	if cred.DBName != "" {
		cc.Database = cred.DBName
	}
	host, port := r.base.Host, r.base.Port
	if cred.Host != "" {
		host = cred.Host
	}
	if cred.Port > 0 && cred.Port <= 65535 {
		port = uint16(cred.Port)
	}
	if host == r.base.Host && port == r.base.Port {
		return
	}
	// The database moved: point the primary address and the fallbacks that
	// share it (sslmode=prefer adds one) at the new one, TLS names too.
	move := func(h string, p uint16, t *tls.Config) (string, uint16, *tls.Config) {
		if h != r.base.Host || p != r.base.Port {
			return h, p, t
		}
		if t != nil && t.ServerName == r.base.Host {
			t = t.Clone()
			t.ServerName = host
		}
		return host, port, t
	}
	cc.Host, cc.Port, cc.TLSConfig = move(cc.Host, cc.Port, cc.TLSConfig)
	for i, fb := range cc.Fallbacks {
		moved := *fb
		moved.Host, moved.Port, moved.TLSConfig = move(fb.Host, fb.Port, fb.TLSConfig)
		cc.Fallbacks[i] = &moved
	}
}

// track makes the connection remember its credential: pgconn's
// AfterConnect runs inside the pool's connect, on this connection only. The
// retire time is fixed now, when the credential was fetched: had the clock
// jumped during the connect, the connection retires at once.
func (r *rotator) track(cc *pgx.ConnConfig, cred *Credential) {
	exp := cred.ExpiresAt.Round(0) // wall clock only: Lambda freezes sandboxes
	st := &connState{leaseID: cred.LeaseID, username: cred.Username, expiresAt: exp, retireAt: r.retireAt(exp)}
	next := cc.AfterConnect
	cc.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
		pc.CustomData()[stateKey] = st
		if next != nil {
			return next(ctx, pc)
		}
		return nil
	}
}

// retireAt is when a connection whose credential, fetched now, expires at
// exp stops being handed out: the margin before exp, or half the remaining
// time when less than twice the margin is left (so that a short-lived
// credential, the best src has, is still used rather than retired at once).
func (r *rotator) retireAt(exp time.Time) time.Time {
	if exp.IsZero() {
		return time.Time{}
	}
	left := exp.Sub(r.now())
	if left <= 0 {
		return exp
	}
	return exp.Add(-min(r.margin, left/2))
}

// prepareConn is pgxpool's PrepareConn: false (with a nil error) makes
// pgxpool destroy the connection and retry the Acquire on another one.
func (r *rotator) prepareConn(ctx context.Context, conn *pgx.Conn) (bool, error) {
	st, ok := conn.PgConn().CustomData()[stateKey].(*connState)
	if !ok || st.retireAt.IsZero() || r.now().Before(st.retireAt) {
		return true, nil
	}
	// Due to retire, unless the lease was renewed (same user, later expiry).
	if r.renewed(st, r.latest.Load()) {
		return true, nil
	}
	if cred, err := r.fetch(ctx, r.src.Credentials); err == nil && r.renewed(st, cred) {
		return true, nil
	}
	return false, nil
}

func (r *rotator) renewed(st *connState, cred *Credential) bool {
	if cred == nil || cred.LeaseID != st.leaseID || cred.Username != st.username || !cred.ExpiresAt.After(st.expiresAt) {
		return false
	}
	exp := cred.ExpiresAt.Round(0)
	at := r.retireAt(exp)
	if !r.now().Before(at) {
		return false
	}
	st.expiresAt, st.retireAt = exp, at
	return true
}

// probe logs in with cc's credential and closes the connection at once.
func probe(ctx context.Context, cc *pgx.ConnConfig) error {
	pc := cc.Config.Copy()
	pc.AfterConnect = nil
	pc.OnNotice, pc.OnNotification = nil, nil
	conn, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return err
	}
	_ = conn.Close(ctx)
	return nil
}

// isAuthFailure reports whether err is a refused login: SQLSTATE 28P01
// (invalid_password, also used for unknown or expired users) or 28000
// (invalid_authorization_specification, e.g. NOLOGIN or no pg_hba entry).
func isAuthFailure(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000")
}

// dsn is the credential's DSN, or a URL built from its fields.
func dsn(c *Credential) string {
	if c.DSN != "" {
		return c.DSN
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(c.Username, c.Password), Path: "/" + c.DBName}
	if c.Host != "" {
		u.Host = c.Host
		if c.Port != 0 {
			u.Host = net.JoinHostPort(c.Host, strconv.Itoa(c.Port))
		}
	}
	if c.SSLMode != "" {
		u.RawQuery = url.Values{"sslmode": {c.SSLMode}}.Encode()
	}
	return u.String()
}
