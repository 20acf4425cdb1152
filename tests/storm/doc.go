// Package storm is a bounded scale-out test: what happens when many Lambda
// sandboxes cold-start at once against a broker that Lambda has scaled out
// to many instances, all sharing one small PostgreSQL.
//
// TestColdStartStorm starts
//
//   - one throwaway PostgreSQL with max_connections 30 (sam/local/pgserver),
//     prepared as an operator would (sam/local/demodb);
//   - one STS emulator that verifies every signature (sam/local/stsserver);
//   - 20 broker processes, the real operator binary
//     ("ephemera broker serve --listen 127.0.0.1:0", built once with
//     sam/local/gobuild), each with an admin pool of one connection
//     (EPHEMERA_DB_POOL_SIZE=1), like 20 Lambda instances of the broker;
//
// then releases a few hundred extension clients at the same instant. Each is
// what the extension runs at INIT, in process: the broker client
// (extension/brokerclient, with its own retries: jittered backoff that
// honours Retry-After) under the credential agent (extension/agent), whose
// Start fetches the credential within the INIT budget
// (EPHEMERA_INIT_TIMEOUT's default, 5 s). Every client has an STS identity
// of its own, and the clients are spread over the brokers round-robin, as
// API Gateway spreads requests over Lambda instances. An HTTP transport
// under each client records every answer.
//
// When the brokers are stopped (SIGTERM: requests in flight finish), the
// test asserts that
//
//   - no client ever saw a 500, and every 503 carried Retry-After;
//   - every client either holds a credential or failed its INIT with an
//     error that names why (the broker's 503 code, or its budget ran out);
//   - every 201 any client saw has exactly one issue/allow audit row and a
//     lease; there are as many issue/allow rows as leases; every decision a
//     broker wrote as an audit line has its row, except those the database
//     itself refused (database_unavailable), whose line stands alone;
//   - no role exists without a lease, and no live lease without its role;
//   - no password reached any broker's output.
//
// It logs how many clients got a credential, the median and 99th percentile
// time to credential, the answers by status, and whether PostgreSQL refused
// connections. It never asserts wall-clock timing, and it never skips: it
// needs the PostgreSQL server binaries (see sam/local/pgserver). With
// EPHEMERA_TEST_DATABASE_URL set it runs against that server, whose own
// max_connections then applies.
//
//	go test -count=1 -v ./tests/storm/
package storm
