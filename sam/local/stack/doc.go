// Package stack starts the whole of ephemera on one machine, in one call,
// without Docker or AWS: a throwaway PostgreSQL prepared as an operator would
// (sam/local/pgserver, sam/local/demodb), the SigV4-verifying STS emulator
// (sam/local/stsserver), and the broker serving its HTTP API on a real
// loopback listener. The end-to-end tests (tests/) and the local demo use it.
//
// # Start the system
//
//	s, err := stack.Start(ctx, stack.Options{Output: os.Stderr})
//	if err != nil { ... }
//	defer s.Close()
//
// The broker's audience is s.Audience, its base URL s.BrokerURL, its region
// s.Region. Unless Options say otherwise, it serves DefaultConfig (database
// "orders" on the throwaway server, roles readonly and writer) under
// DefaultPolicies (roles "orders-api-*" of account 123456789012 may issue,
// renew and revoke on orders). In tests, StartTB fails the test (it never
// skips) and registers Close as a cleanup.
//
// # Run a function with the extension
//
// A workload is an execution role known to the STS emulator:
//
//	id := s.Workload("orders-api-role", "orders-fn") // arn:aws:sts::123456789012:assumed-role/orders-api-role/orders-fn
//	extDir, err := stack.Extension(ctx)       // built once per process (sam/local/gobuild)
//	bootstrap, err := stack.DemoFunction(ctx) // likewise
//	emu, err := s.Lambda(ctx, id, extDir, bootstrap, nil)
//	res, err := emu.Invoke(ctx, []byte(`{"routeKey":"GET /orders"}`))
//
// Lambda runs the demo function and the extension under sam/local/lambdaemu
// with the workload's credentials and the EPHEMERA_* variables pointing at
// this stack (see LambdaConfig for the details and for tuning the emulator).
//
// # AWS sessions
//
// The broker has an AWS identity of its own at the STS emulator
// (s.BrokerIdentity, a session of BrokerRole). Options.AWSProfiles become
// the broker's aws_profiles and roles at the STS emulator that trust
// BrokerRole, so that a workload a policy permits to "assume" a profile
// gets an STS session from POST /v1/aws-credentials; Options.Roles adds
// roles with trust policies of their own:
//
//	s, err := stack.Start(ctx, stack.Options{
//		Policies:    `permit (principal, action == Ephemera::Action::"assume", resource == Ephemera::AwsProfile::"reports") when { principal.role == "reports-api" };`,
//		AWSProfiles: []stack.AWSProfile{{Name: "reports", RoleARN: "arn:aws:iam::123456789012:role/reports-read"}},
//	})
//
// # More brokers
//
// StartBroker starts another broker over the same database, STS emulator,
// YAML and policies, on a port of its own: a second Lambda cold start, or
// one whose admin DSN goes through a proxy (BrokerOptions.AdminDSN).
//
// # Hooks for tests
//
// Options.Middleware wraps the broker's handler (slow or failing answers,
// capturing what the broker issued); Options.Configure adjusts the parsed
// broker configuration after validation, for settings the YAML refuses on
// purpose (a max_ttl of a few seconds, to watch many rotations in a short
// test); Options.ReapEvery runs the broker's reaper in the background;
// Options.Postgres sets up the throwaway server (a durable one for
// benchmarks); Options.LogLevel and Options.Metrics say what the broker
// writes to Output.
package stack
