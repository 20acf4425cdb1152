// Package pgserver starts a throwaway PostgreSQL server for tests and for
// local demos.
//
// Start runs initdb into a fresh temporary directory, starts the server with
// pg_ctl on a free port bound to 127.0.0.1 only, and checks that it answers
// queries. The superuser is "postgres" with a random password; password
// authentication uses SCRAM-SHA-256 for every connection, so credentials are
// really checked. Unless Options.Durable is set, durability is switched off
// (fsync, synchronous_commit, full_page_writes) so that start-up and tests
// are fast. Stop shuts the server down and deletes its directory.
//
// In tests, use StartTB, which fails the test (it never skips) when the
// server cannot be started and registers Stop as a cleanup:
//
//	func TestSomething(t *testing.T) {
//		srv := pgserver.StartTB(t, pgserver.Options{LogStatements: true})
//		conn, err := pgx.Connect(context.Background(), srv.URL())
//		...
//		logs, _ := srv.Logs() // e.g. check that no secret was logged
//	}
//
// A package whose tests share one server starts it in TestMain with Main,
// which prepares it with a setup function, runs the tests, stops it and
// exits non-zero (never skipping) if the server cannot start or setup
// fails:
//
//	var admin *pgxpool.Pool
//
//	func TestMain(m *testing.M) {
//		pgserver.Main(m, pgserver.Options{}, func(ctx context.Context, s *pgserver.Server) (func(), error) {
//			pool, err := pgxpool.New(ctx, s.URL())
//			if err != nil {
//				return nil, err
//			}
//			admin = pool
//			return pool.Close, nil // runs after the tests, before the server stops
//		})
//	}
//
// Outside tests (for example in a demo binary), call Start and defer Stop:
//
//	srv, err := pgserver.Start(ctx, pgserver.Options{})
//	if err != nil { ... }
//	defer srv.Stop()
//
// # Server binaries
//
// The PostgreSQL server binaries are found with "pg_config --bindir", then in
// the highest-numbered /usr/lib/postgresql/*/bin, then via initdb on PATH. On
// Debian and Ubuntu, install them with "apt-get install postgresql".
//
// # Where the files go, and start-up speed
//
// Each server lives in a fresh directory pgserver-* that Stop deletes. It
// is created in /dev/shm when that is a tmpfs with at least 1 GiB free and
// TMPDIR is not set (creating a data directory's thousand files is several
// times faster in memory than on disk), else in os.TempDir().
//
// initdb is the slow part of starting a server (most of a second on an idle
// machine, several seconds on a busy one). So the first Start runs initdb
// once into a cache directory pgserver-template-<uid>-<hash> next to the
// servers' directories (about 40 MB, private to the OS user, never started),
// and every Start, in this process or later ones, copies that data directory
// and, right after the server starts, replaces the cached superuser password
// with the new server's own random password (sending only its SCRAM
// verifier, from a session that does not log statements). Stop leaves the
// cache in place; it is safe to delete at any time. If the cache is
// unusable, Start falls back to a plain initdb.
//
// A process that dies without calling Stop (a test binary killed by go test
// -timeout, for instance) leaves its server running. Each server directory
// records its owning process, and the first Start of a later process stops
// and deletes such orphans of the same OS user.
//
// PostgreSQL refuses to run as root. When the calling process is root, initdb
// and pg_ctl run as the "postgres" operating-system user (created by the
// Debian package), and the temporary directory is handed over to that user.
//
// # External mode
//
// If the environment variable EPHEMERA_TEST_DATABASE_URL is set, no server is
// started. Instead Start connects to that server, creates a fresh database
// named ephemera_test_<random hex>, and URL and Database point at it, so
// that test packages running in parallel stay isolated. Stop drops that
// database again. In this mode there is no server log: LogFile returns "" and
// Logs returns ErrNoLogs, and the server settings in Options are ignored.
package pgserver
