// Package storm is a bounded scale-out test: what happens when many Lambda
// sandboxes cold-start at once against a broker that Lambda has scaled out
// to many instances, all sharing one small PostgreSQL.
//
// Each test starts
//
//   - one throwaway PostgreSQL with max_connections 30 (sam/local/pgserver),
//     prepared as an operator would (sam/local/demodb);
//   - one STS emulator that verifies every signature (sam/local/stsserver);
//   - 20 broker processes, the real operator binary
//     ("ephemera broker serve --listen 127.0.0.1:0", built once with
//     sam/local/gobuild), like 20 Lambda instances of the broker;
//
// then releases hundreds of extension clients at the same instant. Each is
// what the extension runs at INIT, in process: the broker client
// (extension/brokerclient, with its own retries: jittered backoff that
// honours Retry-After) under the credential agent (extension/agent), whose
// Start fetches the credential within the INIT budget
// (EPHEMERA_INIT_TIMEOUT's default, 5 s). Every client has an STS identity
// of its own, and the clients are spread over the brokers round-robin, as
// API Gateway spreads requests over Lambda instances. An HTTP transport
// under each client records every answer.
//
// TestColdStartStorm sizes the brokers as in Lambda: one admin connection
// each (EPHEMERA_DB_POOL_SIZE=1), 20 of the server's 27 non-superuser slots,
// and 500 clients. TestColdStartStormExhausted gives them the pool of a
// long-running server (8 each, 160 for 27 slots), so that PostgreSQL refuses
// connections and pools wait, with 200 clients and EPHEMERA_DB_TIMEOUT 2 s:
// the configuration that used to answer 500s.
//
// When the brokers are stopped (SIGTERM: requests in flight finish), each
// test asserts that
//
//   - no client ever saw a 500, and every 503 carried Retry-After and the
//     code database_unavailable or sts_unavailable;
//   - every client either holds a credential or failed its INIT with an
//     error that names why (the broker's 503 code, or its budget ran out);
//   - every 201 any client saw has its lease and exactly one issue/allow
//     audit row; there are as many issue/allow rows as leases;
//   - every decision a broker wrote as an audit line has its row, except
//     where the broker says why not: the database itself failed
//     (database_unavailable: the line stands alone), or it logged that the
//     row could not be written in time; those are counted and logged;
//   - no role exists without a lease, and no live lease without its role;
//   - no password reached any broker's output;
//   - in the exhausted storm, PostgreSQL did refuse connections.
//
// A broker may also answer a request whose client has already given up (its
// INIT budget ran out while the request waited); no client sees that answer.
// What the brokers logged for those is checked too: a cancelled request is
// the database not answering in time, 503 database_unavailable, never 500.
//
// The tests log how many clients got a credential, the median and 99th
// percentile time to credential, the answers by status, and how many
// connections PostgreSQL refused. They never assert wall-clock timing, and
// never skip: they need the PostgreSQL server binaries (see
// sam/local/pgserver). With EPHEMERA_TEST_DATABASE_URL set they run against
// that server, whose own max_connections then applies.
//
//	go test -count=1 -v ./tests/storm/
package storm
