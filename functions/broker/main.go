// Command broker is the credential broker's AWS Lambda entry point: API
// Gateway → the broker's net/http handler. It only wires; the broker lives in
// package broker. Build with -tags lambda.norpc.
//
// The SAM template puts the broker behind one of two APIs, and this one
// binary serves both: a public HTTP API sends payload format 2.0 events, a
// private REST API sends payload format 1.0 (proxy) events. apigw.Dispatcher
// reads the raw event, tells the two apart ("version":"2.0" or a top-level
// "httpMethod") and answers in the shape the event came in; anything else is
// answered 400 and logged as a warning. Either way the broker sees the same
// *http.Request: the path without the REST API's stage prefix, the caller's
// source IP as RemoteAddr, and the same body size limit.
package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/internal/apigw"
	"github.com/ephemera-sh/ephemera/internal/lambdamain"
	"github.com/ephemera-sh/ephemera/internal/logging"
)

func main() {
	log := logging.New(os.Stderr)
	// apigw logs refused events and recovered panics through slog's default
	// logger: make those records JSON with the Lambda request id, like ours.
	slog.SetDefault(log)
	cfg := lambdamain.Config(log)
	b, err := broker.New(context.Background(), broker.Options{Config: cfg, Logger: log})
	if err != nil {
		lambdamain.Exit(log, "broker did not start", err)
	}
	defer b.Close()
	// The declared type pins the handler's signature at build time; lambda.Start
	// checks it only by reflection, and a wrong one would fail every invoke.
	var handler func(context.Context, json.RawMessage) (json.RawMessage, error) = apigw.Dispatcher(b.Handler())
	lambda.Start(handler)
}
