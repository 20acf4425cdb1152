package trace

import (
	"net/http"

	"github.com/aws/aws-xray-sdk-go/v2/xray"
)

// HTTPClient returns a copy of c (http.DefaultClient when nil) whose
// requests, when their context carries a segment (see Start), are each
// recorded as a remote subsegment ("namespace": "remote") named after the
// request's host, with the method, the URL without its query and user
// information, and the response status; and carry the X-Amzn-Trace-Id
// header, so that the server's segment joins the same trace. Requests
// without a segment in their context go straight to c's transport,
// untouched. The caller's request is never modified.
//
// Use it for the STS call and for the extension's broker calls.
func HTTPClient(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cc := *c
	cc.Transport = &roundTripper{base: base, traced: xray.RoundTripper(base)}
	return &cc
}

type roundTripper struct {
	base   http.RoundTripper
	traced http.RoundTripper
}

func (rt *roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, ok := parentContext(r.Context())
	if !ok {
		return rt.base.RoundTrip(r)
	}
	// The SDK sets the trace header on the request it is given: give it a
	// copy with its own header map.
	r2 := r.WithContext(ctx)
	r2.Header = r.Header.Clone()
	if r2.Header == nil {
		r2.Header = make(http.Header)
	}
	return rt.traced.RoundTrip(r2)
}

// CloseIdleConnections closes the idle connections of the wrapped
// transport, so that (*http.Client).CloseIdleConnections keeps working.
func (rt *roundTripper) CloseIdleConnections() {
	type closeIdler interface{ CloseIdleConnections() }
	if ci, ok := rt.base.(closeIdler); ok {
		ci.CloseIdleConnections()
	}
}
