package trace

import (
	"context"
	"encoding/json"
	"sync/atomic"

	"github.com/aws/aws-xray-sdk-go/v2/header"
	"github.com/aws/aws-xray-sdk-go/v2/xray"
)

// HeaderName is the HTTP header that carries the trace context.
const HeaderName = "X-Amzn-Trace-Id"

// headerKey is the context key of WithHeader.
type headerKey struct{}

func noopEnd(error) {}

// Start begins a subsegment named name under whatever segment ctx carries:
// a segment begun by BeginSegment, a subsegment begun by Start, or the
// function's own segment in Lambda (see the package documentation). It
// returns the child ctx, to pass to the work being measured, and end, which
// closes the subsegment and records err (only its type and message: pass
// errors that are safe to show) when err is not nil. Call end exactly once;
// further calls do nothing.
//
// Outside Lambda and with no segment in ctx, or when tracing is off, Start
// returns ctx unchanged and a no-op end: nothing is recorded, nothing is
// logged, nothing fails.
func Start(ctx context.Context, name string) (context.Context, func(error)) {
	pctx, ok := parentContext(ctx)
	if !ok {
		return ctx, noopEnd
	}
	cctx, seg := xray.BeginSubsegment(pctx, name)
	if seg == nil {
		return ctx, noopEnd
	}
	return cctx, endFunc(seg)
}

// BeginSegment begins a root segment named name, for processes that do not
// run in Lambda (local broker serve, reaper runs, tests), and returns ctx
// carrying it and end, which closes it, records err as Start's end does and
// sends the segment with its subsegments to the daemon. Call end exactly
// once, or the segment is never sent. Whether the segment is sampled
// follows WithSamplingRate. When tracing is off, BeginSegment returns ctx
// unchanged and a no-op end.
func BeginSegment(ctx context.Context, name string) (context.Context, func(error)) {
	if !Enabled() {
		return ctx, noopEnd
	}
	cctx, seg := xray.BeginSegment(ctx, name)
	return cctx, endFunc(seg)
}

func endFunc(seg *xray.Segment) func(error) {
	var done atomic.Bool
	return func(err error) {
		if done.CompareAndSwap(false, true) {
			seg.Close(err)
		}
	}
}

// WithHeader returns a copy of ctx carrying the X-Amzn-Trace-Id value h
// ("Root=…;Parent=…;Sampled=…") of a segment that another process owns, so
// that Start hangs subsegments under that segment. It is for processes that
// receive the trace context out of band, such as the extension, which reads
// it from the Extensions API INVOKE event. Lambda functions need not call
// it: the context of their handler already carries the header. An empty or
// malformed h leaves Start a no-op.
func WithHeader(ctx context.Context, h string) context.Context {
	return context.WithValue(ctx, headerKey{}, h)
}

// incomingHeader returns the trace header of a segment owned by someone
// else (the Lambda service, or the process behind WithHeader), or "".
func incomingHeader(ctx context.Context) string {
	if h, ok := ctx.Value(headerKey{}).(string); ok && h != "" {
		return h
	}
	if inLambda.Load() {
		// aws-lambda-go stores the invocation's header under this string key.
		if h, ok := ctx.Value(xray.LambdaTraceHeaderKey).(string); ok {
			return h
		}
	}
	return ""
}

// parentContext returns ctx carrying a segment for a new subsegment to hang
// from, and whether there is one. When the parent is a segment owned by
// someone else, it is represented by a facade segment: the SDK never sends
// a facade, and sends each subsegment under it as soon as the subsegment
// is closed, with the facade's trace ID and ID as its trace_id and
// parent_id.
func parentContext(ctx context.Context) (context.Context, bool) {
	if !Enabled() {
		return ctx, false
	}
	if xray.GetSegment(ctx) != nil {
		return ctx, true
	}
	h := incomingHeader(ctx)
	if h == "" {
		return ctx, false
	}
	hdr := header.FromString(h)
	if hdr.TraceID == "" || hdr.ParentID == "" {
		return ctx, false
	}
	fctx, _ := xray.BeginFacadeSegment(ctx, "facade", hdr)
	return fctx, true
}

// current returns the (sub)segment of ctx that this process may write to,
// or nil.
func current(ctx context.Context) *xray.Segment {
	if !Enabled() {
		return nil
	}
	seg := xray.GetSegment(ctx)
	if seg == nil || seg.Facade {
		return nil
	}
	return seg
}

// Annotate adds an indexed annotation key=value to the current segment or
// subsegment of ctx, searchable in X-Ray with filter expressions such as
// annotation.lease_id = "…". value must be a string, a bool, an integer or
// a float; other values are dropped. Characters of key other than ASCII
// letters, digits and '_' become '_'. Never pass secrets. Without a segment
// in ctx, Annotate does nothing.
func Annotate(ctx context.Context, key string, value any) {
	seg := current(ctx)
	if seg == nil {
		return
	}
	v, ok := annotationValue(value)
	if !ok {
		return
	}
	_ = seg.AddAnnotation(annotationKey(key), v)
}

// AddMetadata adds non-indexed metadata key=value to the current segment or
// subsegment of ctx. value is encoded as JSON at once (later changes to it
// are not seen); a value that cannot be encoded is dropped. Never pass
// secrets. Without a segment in ctx, AddMetadata does nothing.
func AddMetadata(ctx context.Context, key string, value any) {
	seg := current(ctx)
	if seg == nil {
		return
	}
	b, err := json.Marshal(value)
	if err != nil {
		return
	}
	_ = seg.AddMetadata(key, json.RawMessage(b))
}

// TraceHeader returns the X-Amzn-Trace-Id value that a call made on behalf
// of ctx's segment should carry (its Parent is that segment), or "" when
// ctx carries no segment or tracing is off. In Lambda, with no subsegment
// in ctx, it is the function's own header. The extension sets it on its
// broker calls; HTTPClient sets it by itself.
func TraceHeader(ctx context.Context) string {
	if !Enabled() {
		return ""
	}
	if seg := xray.GetSegment(ctx); seg != nil {
		return seg.DownstreamHeader().String()
	}
	return incomingHeader(ctx)
}

func annotationValue(v any) (any, bool) {
	switch x := v.(type) {
	case string, bool, int, uint, float32, float64:
		return x, true
	case int8:
		return int(x), true
	case int16:
		return int(x), true
	case int32:
		return int(x), true
	case int64:
		if int64(int(x)) == x {
			return int(x), true
		}
		return float64(x), true
	case uint8:
		return uint(x), true
	case uint16:
		return uint(x), true
	case uint32:
		return uint(x), true
	case uint64:
		if uint64(uint(x)) == x {
			return uint(x), true
		}
		return float64(x), true
	}
	return nil, false
}

func annotationKey(k string) string {
	valid := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
	}
	b := []byte(nil)
	for i := 0; i < len(k); i++ {
		if !valid(k[i]) {
			if b == nil {
				b = []byte(k)
			}
			b[i] = '_'
		}
	}
	if b == nil {
		return k
	}
	return string(b)
}
