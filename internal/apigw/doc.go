// Package apigw serves a plain net/http Handler behind an Amazon API Gateway
// HTTP API (payload format version 2.0) in AWS Lambda.
//
// The same http.Handler can run locally with http.ListenAndServe and in
// Lambda with nothing else differing:
//
//	mux := http.NewServeMux()
//	// ... register routes ...
//	if os.Getenv("AWS_LAMBDA_FUNCTION_NAME") != "" {
//		lambda.Start(apigw.Handler(mux))
//	} else {
//		log.Fatal(http.ListenAndServe(":8080", mux))
//	}
//
// Request converts the incoming event to an *http.Request bound to the
// invocation context (which carries the lambdacontext.LambdaContext), and
// the response written by the handler is buffered and converted back to an
// events.APIGatewayV2HTTPResponse. Textual bodies are returned as plain
// strings; everything else is base64-encoded.
//
// Handler never returns a Lambda error: malformed events are answered with a
// 400 JSON error and a panic in the wrapped handler is recovered, logged via
// log/slog and answered with a 500 JSON error, because API Gateway would turn
// a Lambda error into an opaque 500 without a body.
package apigw
