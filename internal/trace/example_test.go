package trace_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/ephemera-sh/ephemera/internal/trace"
	"github.com/jackc/pgx/v5"
)

func attest(context.Context) error { return errors.New("attest: signature expired") }

// Code is instrumented unconditionally: without a segment in ctx (here,
// context.Background()), Start returns ctx unchanged and end does nothing.
func ExampleStart() {
	ctx, end := trace.Start(context.Background(), "attest")
	err := attest(ctx)
	end(err) // only the error's type and message are recorded
	trace.Annotate(ctx, "principal_account", "123456789012")

	fmt.Printf("traced: %t\n", trace.TraceHeader(ctx) != "")
	// Output: traced: false
}

func ExampleBeginSegment() {
	if err := trace.Configure(); err != nil {
		fmt.Println(err)
		return
	}
	ctx, end := trace.BeginSegment(context.Background(), "reaper")
	defer func() { end(nil) }()

	ctx, endSweep := trace.Start(ctx, "sweep")
	// ... revoke expired leases with ctx ...
	endSweep(nil)
}

func ExampleHTTPClient() {
	client := trace.HTTPClient(&http.Client{})
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, "https://sts.amazonaws.com/", nil)
	if err != nil {
		return
	}
	_, _ = client, req // client.Do(req) records a remote subsegment "sts.amazonaws.com"
}

func ExamplePgxTracer() {
	cfg, err := pgx.ParseConfig("postgres://broker@db.internal:5432/orders")
	if err != nil {
		return
	}
	cfg.Tracer = trace.PgxTracer()
	// pgx.ConnectConfig(ctx, cfg): every statement run with a traced ctx is
	// a subsegment "orders@db.internal" whose sql.sanitized_query never
	// holds argument values or literals.
}
