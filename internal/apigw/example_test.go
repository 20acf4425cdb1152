package apigw_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/ephemera-sh/ephemera/internal/apigw"
)

// The same mux serves http.ListenAndServe(":8080", mux) locally and
// lambda.Start(apigw.Handler(mux)) in AWS Lambda. Here the Lambda side is
// invoked directly with a minimal API Gateway HTTP API v2 event.
func Example() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"hello":%q,"lang":%q}`, r.PathValue("name"), r.URL.Query().Get("lang"))
	})

	handler := apigw.Handler(mux) // pass to lambda.Start in main

	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "req-1"})
	var e events.APIGatewayV2HTTPRequest
	e.Version = "2.0"
	e.RawPath = "/hello/gopher"
	e.RawQueryString = "lang=go"
	e.Headers = map[string]string{"host": "api.example.com"}
	e.RequestContext.HTTP.Method = "GET"
	e.RequestContext.HTTP.SourceIP = "192.0.2.1"

	res, err := handler(ctx, e)
	if err != nil {
		panic(err)
	}
	fmt.Println(res.StatusCode, res.Headers["Content-Type"], res.IsBase64Encoded)
	fmt.Println(res.Body)

	e.RequestContext.HTTP.Method = "POST"
	e.Body, e.IsBase64Encoded = "%%%", true
	res, _ = handler(ctx, e)
	fmt.Println(res.StatusCode, res.Body)
	// Output:
	// 200 application/json false
	// {"hello":"gopher","lang":"go"}
	// 400 {"error":{"code":"invalid_request","message":"invalid base64 body","request_id":"req-1"}}
}

// One function behind a REST API (payload v1) and an HTTP API (payload v2):
// Dispatcher answers each event in its own shape. The REST API's
// requestContext.path carries the stage ("/prod/hello/gopher"); the handler
// sees the path without it.
func ExampleDispatcher() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "hello %s from %s", r.PathValue("name"), r.RemoteAddr)
	})
	handler := apigw.Dispatcher(mux) // pass to lambda.Start in main

	rest := `{"httpMethod":"GET","path":"/hello/gopher","requestContext":{"stage":"prod","path":"/prod/hello/gopher",
		"identity":{"sourceIp":"10.0.1.25","vpceId":"vpce-0123456789abcdef0"}}}`
	httpAPI := `{"version":"2.0","rawPath":"/hello/gopher","requestContext":{"http":{"method":"GET","sourceIp":"192.0.2.1"}}}`
	for _, event := range []string{rest, httpAPI, `{"source":"aws.events"}`} {
		answer, err := handler(context.Background(), json.RawMessage(event))
		if err != nil {
			panic(err)
		}
		fmt.Println(string(answer))
	}
	// Output:
	// {"statusCode":200,"headers":{},"multiValueHeaders":{"Content-Type":["text/plain"]},"body":"hello gopher from 10.0.1.25:0"}
	// {"statusCode":200,"headers":{"Content-Type":"text/plain"},"multiValueHeaders":null,"body":"hello gopher from 192.0.2.1:0","cookies":null}
	// {"statusCode":400,"headers":{"Content-Type":"application/json"},"multiValueHeaders":null,"body":"{\"error\":{\"code\":\"invalid_request\",\"message\":\"unsupported event\",\"request_id\":\"\"}}","cookies":null}
}
