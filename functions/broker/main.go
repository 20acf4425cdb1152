// Command broker is the credential broker's AWS Lambda entry point: API
// Gateway HTTP API (payload v2) → the broker's net/http handler. It only
// wires; the broker lives in package broker. Build with -tags lambda.norpc.
package main

import (
	"context"
	"os"

	"github.com/aws/aws-lambda-go/lambda"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/internal/apigw"
	"github.com/ephemera-sh/ephemera/internal/logging"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

func main() {
	log := logging.New(os.Stderr)
	if err := trace.Configure(); err != nil { // X-Ray daemon from AWS_XRAY_DAEMON_ADDRESS; off with EPHEMERA_TRACING=off
		log.Warn("tracing disabled", "err", err)
	}
	cfg, err := config.FromEnv(os.LookupEnv)
	if err != nil {
		log.Error("invalid configuration", "err", err)
		os.Exit(1)
	}
	b, err := broker.New(context.Background(), broker.Options{Config: cfg, Logger: log})
	if err != nil {
		log.Error("broker did not start", "err", err)
		os.Exit(1)
	}
	defer b.Close()
	lambda.Start(apigw.Handler(b.Handler()))
}
