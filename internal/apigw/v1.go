package apigw

import (
	"context"
	"maps"
	"net/http"
	"net/url"
	"slices"

	"github.com/aws/aws-lambda-go/events"
)

// HandlerV1 adapts h to a typed Lambda handler for an API Gateway REST API
// proxy integration (payload format version 1.0, which an HTTP API sends too
// when its integration asks for 1.0). It answers exactly as Handler does,
// errors included, but in the v1 answer shape: every header in
// MultiValueHeaders, non-textual bodies base64-encoded. If h is nil,
// http.DefaultServeMux is used.
//
// The returned function never returns a non-nil error.
func HandlerV1(h http.Handler) func(ctx context.Context, req events.APIGatewayProxyRequest) (events.APIGatewayProxyResponse, error) {
	if h == nil {
		h = http.DefaultServeMux
	}
	return func(ctx context.Context, e events.APIGatewayProxyRequest) (events.APIGatewayProxyResponse, error) {
		r, err := RequestV1(ctx, e)
		return exchange(ctx, h, r, err).responseV1(), nil
	}
}

// RequestV1 converts an API Gateway REST API proxy (payload v1) event to an
// *http.Request bound to ctx, shaped like Request's:
//
//   - the method is e.HTTPMethod;
//   - the path is e.Path, the path the client asked for (a REST API keeps
//     its percent-encoding). RequestContext.Path is never used: it starts
//     with the stage name ("/prod/v1/health"), which routes do not know;
//   - the query is rebuilt from MultiValueQueryStringParameters, or
//     QueryStringParameters when that is empty. API Gateway hands over decoded
//     values, so they are escaped again; keys come out sorted and a key's
//     values keep their order;
//   - headers come from MultiValueHeaders (repeated headers stay separate
//     values), or Headers when that is empty; Host moves to r.Host, falling
//     back to RequestContext.DomainName;
//   - the body is base64-decoded when e.IsBase64Encoded is set;
//   - RemoteAddr is RequestContext.Identity.SourceIP with port 0.
//
// The checks are Request's: a method that is an HTTP token, an absolute path
// without '?' or '#' that parses, a body that decodes. Errors are of type
// *RequestError.
func RequestV1(ctx context.Context, e events.APIGatewayProxyRequest) (*http.Request, error) {
	query := url.Values(e.MultiValueQueryStringParameters)
	if len(query) == 0 && len(e.QueryStringParameters) > 0 {
		query = make(url.Values, len(e.QueryStringParameters))
		for k, v := range e.QueryStringParameters {
			query[k] = []string{v}
		}
	}

	var header http.Header
	if len(e.MultiValueHeaders) > 0 {
		header = make(http.Header, len(e.MultiValueHeaders))
		for _, k := range slices.Sorted(maps.Keys(e.MultiValueHeaders)) {
			if len(e.MultiValueHeaders[k]) == 0 {
				continue
			}
			ck := http.CanonicalHeaderKey(k)
			header[ck] = append(header[ck], e.MultiValueHeaders[k]...)
		}
	} else {
		header = make(http.Header, len(e.Headers))
		for _, k := range slices.Sorted(maps.Keys(e.Headers)) {
			ck := http.CanonicalHeaderKey(k)
			header[ck] = append(header[ck], e.Headers[k])
		}
	}

	return newRequest(ctx, requestParts{
		method:     e.HTTPMethod,
		path:       e.Path,
		rawQuery:   query.Encode(),
		header:     header,
		domainName: e.RequestContext.DomainName,
		body:       e.Body,
		isBase64:   e.IsBase64Encoded,
		sourceIP:   e.RequestContext.Identity.SourceIP,
	})
}
