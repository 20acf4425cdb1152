// Package apigw serves a plain net/http Handler behind Amazon API Gateway in
// AWS Lambda, whichever API sits in front: an HTTP API (payload format 2.0)
// or a REST API with proxy integrations (payload format 1.0).
//
// The same http.Handler can run locally with http.ListenAndServe and in
// Lambda with nothing else differing:
//
//	mux := http.NewServeMux()
//	// ... register routes ...
//	if os.Getenv("AWS_LAMBDA_FUNCTION_NAME") != "" {
//		lambda.Start(apigw.Dispatcher(mux))
//	} else {
//		log.Fatal(http.ListenAndServe(":8080", mux))
//	}
//
// # One handler for both APIs
//
// Dispatcher takes the raw event and tells the formats apart: "version":"2.0"
// is an HTTP API event, a top-level "httpMethod" a REST API one. It answers
// in the shape the event came in, so one function can sit behind either API
// (or both). An event of neither shape gets a 400 and a logged warning. When
// only one format can ever arrive, Handler (v2) and HandlerV1 (v1) are the
// typed handlers Dispatcher uses.
//
// # What the handler sees
//
// Request (v2) and RequestV1 (v1) convert the event to an *http.Request bound
// to the invocation context (which carries the lambdacontext.LambdaContext),
// shaped like one net/http's server would make: a relative URL with
// RequestURI set, the Host header moved to r.Host, the body base64-decoded
// when the event says so, and RemoteAddr set to the caller's source IP with
// port 0. The formats differ in what they carry, and the conversion hides it:
//
//   - the path: a REST API event's requestContext.path starts with the stage
//     name ("/prod/v1/health"); RequestV1 uses the top-level path
//     ("/v1/health"), so routes are the same behind both APIs;
//   - repeated headers: payload v2 joins them with commas into one value,
//     payload v1 keeps them apart (multiValueHeaders), and so does the
//     request;
//   - the query: payload v1 hands over decoded values, which RequestV1
//     escapes again, keys sorted.
//
// Both refuse the same malformed events with a 400: a method that is not an
// HTTP token, a path that is not absolute or carries '?' or '#', a body that
// is not base64 when it should be.
//
// # What the caller gets
//
// The response written by the handler is buffered and converted back:
// textual bodies (text/*, JSON, XML) as plain strings, everything else
// base64-encoded; a missing Content-Type is sniffed as net/http does. In
// payload v2 repeated headers are joined and Set-Cookie goes to cookies; in
// payload v1 every header keeps its values apart in multiValueHeaders.
//
// No handler returns a Lambda error: malformed events are answered with a
// 400 JSON error and a panic in the wrapped handler is recovered, logged via
// log/slog and answered with a 500 JSON error, because API Gateway would turn
// a Lambda error into an opaque 500 without a body.
package apigw
