// Package trace records AWS X-Ray traces of the broker, the extension and
// the reaper. It is the only package of the project that imports the X-Ray
// SDK (github.com/aws/aws-xray-sdk-go/v2/xray), and it is kept small so
// that moving to OpenTelemetry later changes this package only: callers
// see context.Context, error and the standard library's types, never the
// SDK's.
//
// # Setting up
//
// Call Configure once at start-up, before serving:
//
//	if err := trace.Configure(); err != nil {
//		return err
//	}
//
// The daemon address comes from AWS_XRAY_DAEMON_ADDRESS (Lambda sets it;
// 127.0.0.1:2000 otherwise). EPHEMERA_TRACING=off turns tracing off, and
// then every function below does nothing (Enabled reports it). The SDK logs
// nothing per request: a missing segment is not an error (the SDK's
// IGNORE_ERROR strategy, unless AWS_XRAY_CONTEXT_MISSING says otherwise),
// and the SDK's own errors, such as an unreachable daemon, reach
// slog.Default at most once a minute.
//
// # Measuring a step
//
// Start begins a subsegment under the segment that ctx carries; end closes
// it and records an error:
//
//	ctx, end := trace.Start(ctx, "attest")
//	principal, err := verifier.Verify(ctx, proof)
//	end(err) // err must be safe to show: only its type and message are kept
//
// Annotate adds an indexed, searchable value, AddMetadata a non-indexed
// one. Neither must ever be given a password, a signature, a session token
// or a nonce:
//
//	trace.Annotate(ctx, "lease_id", lease.ID)
//
// When ctx carries no segment (a unit test, a command-line run), Start
// returns ctx unchanged and a no-op end; Annotate, AddMetadata, HTTPClient
// and PgxTracer do nothing either, and nothing is logged. So code is
// instrumented unconditionally.
//
// # Where segments come from
//
// In Lambda, the Lambda service begins the function's segment and passes
// its trace header ("Root=…;Parent=…;Sampled=…") with each invocation;
// aws-lambda-go puts it into the handler's context (and the environment
// variable _X_AMZN_TRACE_ID). When LAMBDA_TASK_ROOT is set, Start finds it
// there and hangs its subsegment under a facade segment standing for the
// function's segment, as the SDK's own Lambda support does: the facade is
// never sent, and each top-level subsegment is sent as soon as it ends,
// with the function segment's trace ID and ID as its trace_id and
// parent_id. Whether anything is sent follows the header's Sampled flag.
// A process that learns the header some other way (the extension, from the
// INVOKE event of the Extensions API) passes it on with WithHeader.
//
// Outside Lambda (local broker serve, a reaper run, tests), BeginSegment
// begins a root segment; it is sent, with its subsegments, when its end is
// called:
//
//	ctx, end := trace.BeginSegment(ctx, "reaper")
//	err := reaper.Run(ctx)
//	end(err)
//
// # Calls to other services
//
// HTTPClient wraps an *http.Client so that each request made with a traced
// context is a remote subsegment named after the host and carries the
// X-Amzn-Trace-Id header; use it for the STS call and the extension's
// broker calls. TraceHeader returns the header value for calls made
// another way.
//
// PgxTracer, set as pgx.ConnConfig.Tracer, records one remote subsegment
// per SQL statement. It never records argument values, string literals or
// anything after them, statements that mention PASSWORD beyond their first
// keywords (CREATE ROLE … PASSWORD carries a SCRAM verifier), or the text
// of server errors:
//
//	cfg, err := pgxpool.ParseConfig(url)
//	if err != nil {
//		return err
//	}
//	cfg.ConnConfig.Tracer = trace.PgxTracer()
package trace
