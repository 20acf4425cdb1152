// Package awscreds holds the end-to-end test of ephemeral AWS credentials: the real
// extension, run by sam/local/lambdaemu next to a function built with unmodified
// aws-sdk-go-v2, gets STS sessions from a real broker (sam/local/stack, with its PostgreSQL) that assumes
// roles at sam/local/stsserver, and serves them in the AWS SDKs' container-credentials
// format. The package has no code of its own; see awscreds_test.go.
package awscreds
