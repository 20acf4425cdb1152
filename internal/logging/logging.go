// Package logging builds the project's log/slog JSON loggers: one format
// everywhere, the level from EPHEMERA_LOG_LEVEL (debug, info, warn, error;
// default info), and the Lambda request id (aws_request_id) added to every
// record logged with a context that carries one.
package logging

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/aws/aws-lambda-go/lambdacontext"
)

// New returns a JSON logger writing to w at the level EPHEMERA_LOG_LEVEL names.
func New(w io.Writer) *slog.Logger {
	return slog.New(Handler(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: Level(os.Getenv("EPHEMERA_LOG_LEVEL"))})))
}

// Level parses a level name; anything unknown is info.
func Level(s string) slog.Level {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Handler wraps h so that records logged with a Lambda context carry
// aws_request_id.
func Handler(h slog.Handler) slog.Handler { return lambdaHandler{h} }

type lambdaHandler struct{ slog.Handler }

func (l lambdaHandler) Handle(ctx context.Context, r slog.Record) error {
	if lc, ok := lambdacontext.FromContext(ctx); ok && lc.AwsRequestID != "" {
		r.AddAttrs(slog.String("aws_request_id", lc.AwsRequestID))
	}
	return l.Handler.Handle(ctx, r)
}

func (l lambdaHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return lambdaHandler{l.Handler.WithAttrs(as)}
}

func (l lambdaHandler) WithGroup(name string) slog.Handler {
	return lambdaHandler{l.Handler.WithGroup(name)}
}
