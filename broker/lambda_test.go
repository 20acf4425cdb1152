package broker_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/ephemera-sh/ephemera/internal/apigw"
)

// TestLambdaServesTheSameHandler issues a credential through the API
// Gateway v2 adapter that functions/broker uses, end to end.
func TestLambdaServesTheSameHandler(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "orders-fn")
	body, err := json.Marshal(map[string]any{"identity": e.proof(w), "database": "orders", "role": "readonly", "ttl_seconds": 120})
	must(t, err)
	ev := events.APIGatewayV2HTTPRequest{
		Version: "2.0", RouteKey: "POST /v1/credentials", RawPath: "/v1/credentials",
		Headers: map[string]string{"content-type": "application/json", "host": "abc.execute-api.us-east-1.amazonaws.com"},
		Body:    string(body),
		RequestContext: events.APIGatewayV2HTTPRequestContext{
			RequestID: "apigw-1", DomainName: "abc.execute-api.us-east-1.amazonaws.com",
			HTTP: events.APIGatewayV2HTTPRequestContextHTTPDescription{Method: "POST", Path: "/v1/credentials", SourceIP: "203.0.113.9"},
		},
	}
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "lambda-req-1"})
	resp, err := apigw.Handler(e.broker.Handler())(ctx, ev)
	must(t, err)
	if resp.StatusCode != 201 || resp.Headers["Content-Type"] != "application/json" || resp.Headers["X-Request-Id"] == "" {
		t.Fatalf("lambda answer %d %v %s", resp.StatusCode, resp.Headers, resp.Body)
	}
	var cred map[string]any
	must(t, json.Unmarshal([]byte(resp.Body), &cred))
	if cred["username"] == "" || cred["password"] == "" {
		t.Fatalf("credential %s", resp.Body)
	}
	var sourceIP string
	must(t, superuser(t).QueryRow(context.Background(), `SELECT source_ip FROM ephemera.audit_log WHERE request_id = $1`,
		resp.Headers["X-Request-Id"]).Scan(&sourceIP))
	if sourceIP != "203.0.113.9" {
		t.Fatalf("audited source_ip %q, want API Gateway's", sourceIP)
	}
}

// TestLambdaServesTheRESTAPI issues a credential through the dispatcher
// that functions/broker runs, from a private REST API (payload 1.0) event:
// the stage prefix never reaches the broker, and API Gateway's source IP is
// audited.
func TestLambdaServesTheRESTAPI(t *testing.T) {
	e := newEnv(t, envOptions{})
	w := e.workload("orders-api-role", "orders-fn")
	body, err := json.Marshal(map[string]any{"identity": e.proof(w), "database": "orders", "role": "readonly", "ttl_seconds": 120})
	must(t, err)
	ev := map[string]any{
		"resource": "/v1/credentials", "path": "/v1/credentials", "httpMethod": "POST",
		"headers":           map[string]string{"Content-Type": "application/json", "Host": "abc-vpce-1.execute-api.us-east-1.amazonaws.com"},
		"multiValueHeaders": map[string][]string{"Content-Type": {"application/json"}, "Host": {"abc-vpce-1.execute-api.us-east-1.amazonaws.com"}},
		"body":              string(body), "isBase64Encoded": false,
		"requestContext": map[string]any{"stage": "prod", "path": "/prod/v1/credentials", "requestId": "rest-1",
			"identity": map[string]any{"sourceIp": "10.1.2.3", "vpceId": "vpce-0abc", "vpcId": "vpc-0def"}},
	}
	raw, err := json.Marshal(ev)
	must(t, err)
	ctx := lambdacontext.NewContext(context.Background(), &lambdacontext.LambdaContext{AwsRequestID: "lambda-req-2"})
	out, err := apigw.Dispatcher(e.broker.Handler())(ctx, raw)
	must(t, err)
	var resp events.APIGatewayProxyResponse
	must(t, json.Unmarshal(out, &resp))
	requestID := ""
	if v := resp.MultiValueHeaders["X-Request-Id"]; len(v) == 1 {
		requestID = v[0]
	}
	if resp.StatusCode != 201 || requestID == "" {
		t.Fatalf("lambda answer %d %v %s", resp.StatusCode, resp.MultiValueHeaders, resp.Body)
	}
	var sourceIP, database string
	must(t, superuser(t).QueryRow(context.Background(), `SELECT source_ip, database FROM ephemera.audit_log WHERE request_id = $1`,
		requestID).Scan(&sourceIP, &database))
	if sourceIP != "10.1.2.3" || database != "orders" {
		t.Fatalf("audited source_ip %q database %q", sourceIP, database)
	}
}
