// Command demo is an example consumer of ephemera: a Lambda function behind
// API Gateway (HTTP API, payload v2) that reads public.orders with a
// credential served by the ephemera extension. It only wires; the handler
// is in handler.go. Build with -tags lambda.norpc.
//
// Environment: EPHEMERA_DEMO_CREDENTIAL, the credential's name in the
// extension's EPHEMERA_CREDENTIALS (default "orders"); the extension client
// reads EPHEMERA_PORT and AWS_SESSION_TOKEN.
package main

import (
	"context"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/ephemera-sh/ephemera/extension/client"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	// During INIT, deliberately: the extension's local server waits until
	// the credentials are ready, and INIT is not billed to a request. If
	// they cannot be ready (the extension's lazy mode), setup still
	// succeeds and the first invocation that can read them builds the pool.
	h, err := setup(context.Background(), client.New(), os.Getenv, log)
	if err != nil {
		log.Error("demo did not start", "err", err)
		os.Exit(1)
	}
	lambda.Start(h.Handle)
}
