// Package client is what Lambda function code imports to use the database
// credentials and AWS sessions that the ephemera extension holds for it. The extension runs
// in the same sandbox, fetches short-lived PostgreSQL users from the broker,
// renews them, and serves them on 127.0.0.1; this package reads them and
// keeps a pgx pool working while they rotate. No secret is ever stored in
// the function's configuration.
//
// # Connect to the database with a pool
//
// Most functions want a pool. Build it once, at init, outside the handler:
//
//	cfg, err := client.PoolConfig(ctx, client.New(), "orders")
//	if err != nil { ... }
//	pool, err := pgxpool.NewWithConfig(ctx, cfg)
//
// "orders" is a name from the extension's EPHEMERA_CREDENTIALS
// (orders=orders/readonly:15m). Calling PoolConfig at init is fine, even
// while the extension is still starting: its local server waits until the
// credentials are ready. If they cannot be (the extension runs with
// EPHEMERA_ON_INIT_FAILURE=lazy and could not reach its broker), PoolConfig
// returns an error matching ErrNotReady: do not exit then, build the pool
// in a later invocation (functions/demo shows how). Then use the pool as
// usual. Credentials expire after minutes, and the pool takes care of that:
//
//   - every new connection logs in with the credential current at that
//     moment (pgxpool's BeforeConnect), as the extension serves it: one
//     close to expiry too (a role with a TTL under the margin), whose
//     connection then simply retires early;
//   - a connection is no longer handed out once less than a margin (30 s by
//     default, WithRetireMargin) is left on its credential, unless its lease
//     was renewed (PrepareConn); MaxConnLifetime is bounded by the
//     credential's lifetime too;
//   - a login the database refuses (SQLSTATE 28P01 or 28000) makes the
//     pool ask the extension for a new credential once and try again
//     (WithAuthRetry). pgxpool cannot retry a failed connect itself, so
//     BeforeConnect tries each new login on a throwaway connection first:
//     one extra login per new pooled connection, not per query.
//
// A query that is running is never interrupted: connections are retired only
// between uses. Queries therefore keep working across rotations, provided
// none runs longer than the margin. ConnExpiry tells when the credential of
// an acquired connection expires.
//
// # Read a credential
//
// To connect some other way, read the credential itself:
//
//	cred, err := client.Credentials(ctx, "orders")
//	if err != nil { ... }
//	conn, err := pgx.Connect(ctx, cred.DSN)
//
// The package-level Credentials uses a Client made by New(). Read it again
// for every new connection rather than keeping it: the extension returns
// the current credential, renewed or replaced as its expiry approaches.
// Client.Refresh forces a new one.
//
// # Use AWS credentials
//
// The extension also serves the AWS sessions named in its EPHEMERA_AWS_PROFILES
// (reports=reports-read:30m): temporary credentials of a role the broker assumes for the
// function, instead of the function's own execution role. AWSConfig returns an aws.Config
// that uses them:
//
//	cfg, err := client.AWSConfig(ctx, "reports")
//	if err != nil { ... }
//	s3c := s3.NewFromConfig(cfg)
//
// Its Credentials are aws-sdk-go-v2's own container credentials provider
// (credentials/endpointcreds) pointed at http://127.0.0.1:PORT/v1/aws/reports, in a
// credentials cache that asks the extension again 5 minutes before the session expires;
// the region is AWS_REGION. The extension replaces a session before that, so the SDK always
// gets one with time left.
//
// Code that cannot use this package (another language, an unmodified SDK) gets the same
// with the SDK's container credentials provider: set
// AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:7411/v1/aws/reports and
// AWS_CONTAINER_AUTHORIZATION_TOKEN to the value of AWS_SESSION_TOKEN, and unset
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN in the process before the
// SDK loads its configuration (the SDKs' default chains prefer those static variables,
// which Lambda always sets).
//
// # Configure the client
//
// New needs no options inside Lambda. It reads two variables once:
// EPHEMERA_PORT, the extension's port (default 7411, or WithPort), and
// AWS_SESSION_TOKEN, which the extension expects as proof that the caller
// runs in the same sandbox (or WithToken). WithHTTPClient replaces the HTTP
// client (default: 30 s timeout, no proxy); redirects are never followed, so
// the token only ever goes to the extension. WithBaseURL points the client
// at a test server.
//
// # Handle errors
//
// Errors from a Client start with "client:" and can be tested with
// errors.Is: ErrNotReady (503: the extension could not reach the broker yet;
// try again later), ErrUnauthorized (401: wrong or missing token),
// ErrNotFound (404: no credential of that name), ErrMisdirected (421). An
// *Error carries the status and the extension's error code. No error text
// ever contains a password, a DSN or the token.
//
// The extension's answers are decoded strictly (the wire documents are those of
// package extension/localapi, which the extension writes): an answer with a
// duplicate key, a key that differs from a field only in case, or a NUL
// character is not a credential, and the call fails.
//
// # Test code that uses credentials
//
// Functions should depend on the Source interface, not on *Client. In tests,
// a Static source serves a fixed credential, for example one for a
// throwaway PostgreSQL:
//
//	src := client.Static{Credential: client.Credential{
//		Username: "app", Password: pw, Host: "127.0.0.1", Port: port, DBName: "app",
//		SSLMode: "disable", ExpiresAt: time.Now().Add(time.Hour),
//	}}
//	cfg, err := client.PoolConfig(ctx, src, "orders")
//
// # Log safely
//
// A Credential may be logged or printed: String, every fmt verb (%v, %+v,
// %#v), slog (LogValue) and encoding/json (MarshalJSON) show the password
// and DSN as "[REDACTED]" or leave them out.
//
// # If you set your own pool hooks
//
// PoolConfig installs BeforeConnect and PrepareConn on the returned config.
// If you need your own, call PoolConfig's from yours:
//
//	before := cfg.BeforeConnect
//	cfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
//		if err := before(ctx, cc); err != nil {
//			return err
//		}
//		cc.RuntimeParams["application_name"] = "orders-api"
//		return nil
//	}
package client
