package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/ephemera-sh/ephemera/internal/logging"
)

func TestLambdaRequestID(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(logging.Handler(slog.NewJSONHandler(&buf, nil))).With("component", "test")
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-123"})
	log.InfoContext(ctx, "request", "request_id", "broker-1")
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["aws_request_id"] != "req-123" || got["request_id"] != "broker-1" || got["component"] != "test" {
		t.Fatalf("line %s", buf.Bytes())
	}
	buf.Reset()
	log.InfoContext(context.Background(), "no lambda")
	if bytes.Contains(buf.Bytes(), []byte("aws_request_id")) {
		t.Fatalf("aws_request_id without a Lambda context: %s", buf.Bytes())
	}
}

func TestLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "WARN": slog.LevelWarn, "error": slog.LevelError, "": slog.LevelInfo, "loud": slog.LevelInfo} {
		if got := logging.Level(in); got != want {
			t.Errorf("Level(%q) = %v, want %v", in, got, want)
		}
	}
}
