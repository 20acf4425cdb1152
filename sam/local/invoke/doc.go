// Package invoke runs your own Lambda function on this machine with the
// ephemera extension attached, against the local stack (sam/local/stack): a
// throwaway PostgreSQL, the SigV4-verifying STS emulator, the broker and its
// reaper. It is what `ephemera local invoke` and `ephemera local start` do,
// the Docker-free counterparts of `sam local invoke` and `sam local
// start-lambda`.
//
// # Invoke a function once
//
// A function is a directory holding an executable bootstrap (the
// custom-runtime layout Lambda runs, in any language), an executable (a Go
// function built with -tags lambda.norpc), or a command with arguments:
//
//	ev, err := invoke.ReadEnvVars("functions/demo-python/local/env.json")
//	fn, err := invoke.Start(ctx, invoke.Options{
//		Command: []string{"functions/demo-python"},
//		EnvVars: ev,             // SAM's env.json format
//		Logs:    os.Stderr,      // "[runtime] ...", "[ephemera] ...", "[local] ..."
//	})
//	defer fn.Close()         // SHUTDOWN (the extension revokes), then the stack stops
//	res, err := fn.Invoke(ctx, event)
//	os.Stdout.Write(res.Payload)
//
// Start starts the stack, builds the extension from this source tree (or
// takes Options.ExtensionsDir), and runs INIT under sam/local/lambdaemu,
// which freezes the sandbox between invocations as Lambda does.
//
// # Identity and policy
//
// The function's execution role is a role of the STS emulator,
// Options.Role (DefaultRole, orders-api-local, by default) in account
// 123456789012, and its session is the function's name: the extension's
// proofs name arn:aws:sts::123456789012:assumed-role/<role>/<function>, and
// the broker's Cedar policies decide on it as in AWS. LocalPolicies, the
// default, let orders-api-* use database orders and assume the AWS profile
// ProfileName (reports-read), which the broker assumes at the STS emulator.
//
// # Environment
//
// EnvVars is SAM's --env-vars file: an object per function keyed by its
// logical id, and "Parameters" for every function. The function and the
// extension get, in this order of precedence: EPHEMERA_BROKER_URL and
// EPHEMERA_AUDIENCE of the local broker (always); the file's variables
// (those Lambda reserves, such as AWS_REGION, are dropped); the defaults
// DefaultCredentials, DefaultAWSProfiles, DefaultInitTimeout and
// AWS_ENDPOINT_URL_STS (the STS emulator). An empty value removes a
// variable. EPHEMERA_PORT is a free port unless the file sets one.
//
// # Keep it warm
//
// Function.InvokeAPI is the Lambda Invoke API (POST
// /2015-03-31/functions/{name}/invocations) over the one warm sandbox, for
// an http.Server on a loopback address: the AWS CLI and SDKs call it with an
// endpoint override.
package invoke
