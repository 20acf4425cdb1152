package apigw

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/aws/aws-lambda-go/events"
)

// format is an API Gateway Lambda payload format.
type format int

const (
	formatUnknown format = iota // neither of the two below
	formatV1                    // REST API proxy (and HTTP API 1.0): a top-level "httpMethod"
	formatV2                    // HTTP API 2.0: "version":"2.0"
)

// detectFormat tells which payload format event is in: "version":"2.0" is
// formatV2 (even with an "httpMethod" beside it); otherwise any top-level
// "httpMethod" field is formatV1; anything else, JSON that is not an object
// included, is formatUnknown. Like encoding/json, which decodes the event
// next, it matches field names case-insensitively.
func detectFormat(event []byte) format {
	var probe struct {
		Version    json.RawMessage `json:"version"`
		HTTPMethod json.RawMessage `json:"httpMethod"`
	}
	if err := json.Unmarshal(event, &probe); err != nil {
		return formatUnknown
	}
	var version string
	if json.Unmarshal(probe.Version, &version) == nil && version == "2.0" {
		return formatV2
	}
	if probe.HTTPMethod != nil {
		return formatV1
	}
	return formatUnknown
}

// Dispatcher adapts h to one typed Lambda handler that serves both API
// Gateway payload formats, for lambda.Start:
//
//	lambda.Start(apigw.Dispatcher(mux))
//
// It reads the raw event and answers in the same shape: an event with
// "version":"2.0" as Handler does; otherwise one with a top-level
// "httpMethod" (a REST API proxy event) as HandlerV1 does. An event of
// neither format is answered with a 400 invalid_request error ("unsupported
// event") in the v2 shape, and a warning is logged with the event's size and
// top-level field names (never its values). An event of a known format whose
// fields have the wrong JSON types is answered with a 400 ("invalid event")
// in that format's shape, and logged likewise.
//
// Decoding is lenient about what it does not know: real events carry fields
// that aws-lambda-go's structs lack (a private REST API's
// requestContext.identity.vpceId, vpcId, principalOrgId), and those are
// ignored, as the Lambda runtime's own decoding ignores them.
//
// Size limits stay where they are enforced today: Lambda bounds the event,
// and the wrapped handler bounds the body it reads (http.MaxBytesReader), in
// both formats alike since both reach it as the same *http.Request.
//
// The returned function returns a non-nil error only if its answer cannot be
// encoded as JSON, which the answer types make impossible. If h is nil,
// http.DefaultServeMux is used.
func Dispatcher(h http.Handler) func(ctx context.Context, event json.RawMessage) (json.RawMessage, error) {
	v1, v2 := HandlerV1(h), Handler(h)
	return func(ctx context.Context, event json.RawMessage) (json.RawMessage, error) {
		switch detectFormat(event) {
		case formatV2:
			var e events.APIGatewayV2HTTPRequest
			if err := json.Unmarshal(event, &e); err != nil {
				warnEvent(ctx, "apigw: payload v2 event does not decode", event, err)
				return encodeAnswer(invalidEvent(ctx).responseV2())
			}
			res, err := v2(ctx, e)
			if err != nil {
				return nil, err
			}
			return encodeAnswer(res)
		case formatV1:
			var e events.APIGatewayProxyRequest
			if err := json.Unmarshal(event, &e); err != nil {
				warnEvent(ctx, "apigw: payload v1 event does not decode", event, err)
				return encodeAnswer(invalidEvent(ctx).responseV1())
			}
			res, err := v1(ctx, e)
			if err != nil {
				return nil, err
			}
			return encodeAnswer(res)
		}
		warnEvent(ctx, "apigw: event is neither API Gateway payload v1 nor v2", event, nil)
		return encodeAnswer(errorAnswer(http.StatusBadRequest, CodeInvalidRequest, "unsupported event", requestID(ctx)).responseV2())
	}
}

// invalidEvent is the answer to an event whose fields do not decode.
func invalidEvent(ctx context.Context) *responseWriter {
	return errorAnswer(http.StatusBadRequest, CodeInvalidRequest, "invalid event", requestID(ctx))
}

func encodeAnswer(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("apigw: encode answer: %w", err)
	}
	return b, nil
}

// maxLoggedKeys bounds how many top-level field names a warning lists, and
// maxLoggedKeyLen how long each may be.
const (
	maxLoggedKeys   = 16
	maxLoggedKeyLen = 64
)

// warnEvent logs that an event was refused. It names the event's top-level
// fields, which tell an ALB, schedule or hand-made event apart, but never
// logs a value: values may hold signatures and session tokens. A decoding
// error names a Go type and field, not the value either.
func warnEvent(ctx context.Context, msg string, event []byte, err error) {
	attrs := []any{
		slog.String("request_id", requestID(ctx)),
		slog.Int("bytes", len(event)),
		slog.Any("fields", topLevelFields(event)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	slog.WarnContext(ctx, msg, attrs...)
}

// topLevelFields returns up to maxLoggedKeys of event's top-level field
// names, sorted and truncated, or nil when event is not a JSON object.
func topLevelFields(event []byte) []string {
	var fields map[string]json.RawMessage
	if json.Unmarshal(event, &fields) != nil || fields == nil { // not an object, or null
		return nil
	}
	// An object without fields gives an empty list, not nil (not an object).
	keys := slices.AppendSeq(make([]string, 0, len(fields)), maps.Keys(fields))
	slices.Sort(keys)
	if len(keys) > maxLoggedKeys {
		keys = keys[:maxLoggedKeys]
	}
	for i, k := range keys {
		if len(k) > maxLoggedKeyLen {
			keys[i] = strings.ToValidUTF8(k[:maxLoggedKeyLen], "") + "…"
		}
	}
	return keys
}
