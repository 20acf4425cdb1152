// Package lambdaemu emulates the AWS Lambda execution environment without
// Docker: it runs the real function bootstrap and the real external
// extensions as child processes, with the Lambda environment variables,
// and serves them the Runtime API (2018-06-01) and the Extensions API
// (2020-01-01) on one 127.0.0.1 listener (AWS_LAMBDA_RUNTIME_API).
//
// It exists for end-to-end tests and the local demo of the credential
// extension: the extension under test registers, receives INVOKE and
// SHUTDOWN events, is frozen between invocations and sees the wall clock
// jump, exactly as in Lambda. The package does not import "testing";
// [StartTB] takes the small [TB] interface that *testing.T satisfies.
//
// # Running a function with its extensions
//
// Build the function as a custom runtime (for Go: a binary built with
// -tags lambda.norpc that calls lambda.Start) and put the extensions'
// executables in a directory standing for /opt/extensions; each regular
// executable file there is an extension named after its file:
//
//	emu := lambdaemu.StartTB(t, lambdaemu.Config{
//		ExtensionsDir: "testdata/opt/extensions", // holds "ephemera"
//		Bootstrap:     fnBinary,
//		Env:           map[string]string{"EPHEMERA_BROKER_URL": broker.URL},
//		AccessKeyID:   "ASIA...", SecretAccessKey: "...", SessionToken: "...",
//		Freeze:        true, // always in tests: timers must not run between invocations
//		Output:        os.Stderr,
//	})
//	res, err := emu.Invoke(ctx, []byte(`{"order":42}`))
//
// Start runs INIT as Lambda documents it: the extensions start together
// and must each register with their file name in Lambda-Extension-Name;
// then the runtime starts; INIT ends when the runtime has called
// invocation/next and every extension event/next, within
// Config.InitTimeout (10 s by default). A failure, an init/error report from
// an extension or the runtime, or a child exiting, makes Start kill every
// child and return an [*InitError] with the reported type and message.
//
// # Invocations
//
// [Emulator.Invoke] thaws the sandbox, hands the payload to the runtime
// (with Lambda-Runtime-Aws-Request-Id, Lambda-Runtime-Deadline-Ms,
// Lambda-Runtime-Invoked-Function-Arn and Lambda-Runtime-Trace-Id) and an
// INVOKE event to every extension registered for it (same request id,
// absolute deadlineMs = now + Config.Timeout), and returns once the runtime
// answered and it and every extension called next again. Function errors
// come back in [Result.ErrorType]. If the function misses its deadline the
// result is "Sandbox.Timedout"; that, a crashed child, or an extension still
// busy at the deadline resets the sandbox as Lambda does (a Shutdown phase
// with reason "timeout" or "failure"), and the next Invoke runs INIT again.
//
// # Freezing and the clock
//
// With Config.Freeze every child's process group is SIGSTOPped once the
// runtime and all extensions wait in next, and SIGCONTed before the next
// event, so nothing runs between invocations. Wall-clock time goes on: to
// test what an extension does when a credential expired while it was
// frozen, sleep between two Invoke calls. [Emulator.Freeze],
// [Emulator.Thaw] and [Emulator.Frozen] do the same by hand, and
// [Emulator.PIDs] lets a test look at /proc.
//
// # Shutdown
//
// [Emulator.Shutdown] follows the documented sequence within
// Config.ShutdownTimeout (2000 ms by default): SIGTERM to the runtime with
// 30 % of the budget to exit (without any registered extension Lambda
// kills it at once, and so does the emulator), then a SHUTDOWN event
// (shutdownReason "spindown", absolute deadlineMs) to every extension
// registered for it; extensions not registered for SHUTDOWN are killed.
// Whatever still runs at its deadline is SIGKILLed; [ShutdownResult] says
// who exited and who was killed.
//
// # Looking inside
//
// [Emulator.Logs] has everything the children printed, each line prefixed
// "[name] " (the runtime is "runtime"); [Emulator.Events] has the protocol
// record (registrations, next calls, events delivered, signals, exits);
// [Emulator.Extensions] tells who registered for what and which errors they
// reported; [Emulator.RuntimeAPI] is the address, for tests that want to
// speak the protocol themselves.
//
// # Protocol details
//
// Error answers are {"errorMessage","errorType"} JSON with the types of
// AWS's reference implementation (aws-lambda-runtime-interface-emulator):
// a missing, malformed or unknown Lambda-Extension-Identifier is 403
// Extension.MissingExtensionIdentifier, .InvalidExtensionIdentifier or
// .UnknownExtensionIdentifier; a register after INIT is 403
// Extension.RegistrationClosed; a Lambda-Extension-Name that is no file in
// the extensions directory is 403 Extension.InvalidExtensionName; an unknown
// event type is 400 Extension.InvalidEventType; a response or error for a
// request id that is not the current invocation is 400 InvalidRequestID.
// init/error, exit/error and the runtime's response and error are answered
// 202 {"status":"OK"}.
//
// A register from an unknown name while the runtime initializes is taken
// as an internal extension (one that runs inside the runtime process, such
// as the "GoLangEnableSIGTERM" extension aws-lambda-go registers for
// lambda.WithEnableSIGTERM); internal extensions may not register for
// SHUTDOWN.
//
// As in Lambda, extensions do not get the variables specific to the runtime
// process (_HANDLER, LAMBDA_TASK_ROOT, AWS_LAMBDA_LOG_GROUP_NAME,
// AWS_LAMBDA_LOG_STREAM_NAME, ...); both get AWS_LAMBDA_RUNTIME_API, the
// function's name, version and memory size, the region, the execution
// role's credentials, TZ, PATH and Config.Env. Nothing else of the parent's
// environment is passed on.
package lambdaemu
