package broker

import (
	"context"
	"net/netip"
	"time"

	"github.com/ephemera-sh/ephemera/broker/lease"
)

// RequestInfo is what the transport knows of one request: its id (the
// X-Request-Id answer header and the audit trail's request_id), the
// caller's address, and when it arrived. Transports attach it to the
// context with NewContext; use cases read it with FromContext.
type RequestInfo struct {
	ID       string
	SourceIP netip.Addr
	Received time.Time
}

type requestKey struct{}

// NewContext returns ctx carrying info.
func NewContext(ctx context.Context, info RequestInfo) context.Context {
	return context.WithValue(ctx, requestKey{}, info)
}

// FromContext returns the RequestInfo of ctx, if a transport attached one.
func FromContext(ctx context.Context) (RequestInfo, bool) {
	info, ok := ctx.Value(requestKey{}).(RequestInfo)
	return info, ok
}

// requestInfo returns the request's info, filling an id and a time when the
// caller (a test, a tool) gave none.
func (b *Broker) requestInfo(ctx context.Context) RequestInfo {
	info, _ := FromContext(ctx)
	if info.ID == "" {
		if id, err := lease.NewID(); err == nil {
			info.ID = id
		} else {
			info.ID = "unavailable"
		}
	}
	if info.Received.IsZero() {
		info.Received = b.now()
	}
	return info
}
