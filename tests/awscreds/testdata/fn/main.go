// Command fn is the test function of tests/awscreds: a Go custom runtime (build with
// -tags lambda.norpc) that uses unmodified aws-sdk-go-v2. Its AWS configuration comes
// from config.LoadDefaultConfig alone, which finds AWS_CONTAINER_CREDENTIALS_FULL_URI
// (the ephemera extension's /v1/aws/<name>) and AWS_CONTAINER_AUTHORIZATION_TOKEN in the
// environment. Each invocation calls STS GetCallerIdentity (at TEST_STS_ENDPOINT) and
// returns who it is.
package main

import (
	"context"
	"errors"
	"log"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

type request struct {
	// Invalidate drops the SDK's cached credentials first, so that they are read from the
	// extension again.
	Invalidate bool `json:"invalidate"`
}

type response struct {
	ARN         string `json:"arn,omitempty"`
	AccessKeyID string `json:"access_key_id,omitempty"` // an identifier, not a secret
	Source      string `json:"source,omitempty"`
	ErrorCode   string `json:"error_code,omitempty"`
	Error       string `json:"error,omitempty"`
}

var (
	cfg    aws.Config
	client *sts.Client
)

func handle(ctx context.Context, req request) (response, error) {
	if req.Invalidate {
		if c, ok := cfg.Credentials.(*aws.CredentialsCache); ok {
			c.Invalidate()
		}
	}
	var resp response
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		resp.Error = "retrieving credentials: " + err.Error()
		return resp, nil
	}
	resp.AccessKeyID, resp.Source = creds.AccessKeyID, creds.Source
	out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			resp.ErrorCode = ae.ErrorCode()
		}
		resp.Error = err.Error()
		return resp, nil
	}
	resp.ARN = aws.ToString(out.Arn)
	return resp, nil
}

func main() {
	// Lambda (and lambdaemu) always give the function its execution role's static
	// credentials, and the SDK's default chain prefers AWS_ACCESS_KEY_ID & co. to the
	// container credentials provider. So remove them from this process's environment
	// before the SDK loads its configuration. The extension expects the session token as
	// the container provider's authorization token: the test sets
	// AWS_CONTAINER_AUTHORIZATION_TOKEN; without it, copy the token first.
	if os.Getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN") == "" {
		os.Setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", os.Getenv("AWS_SESSION_TOKEN"))
	}
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"} {
		os.Unsetenv(k)
	}
	var err error
	cfg, err = config.LoadDefaultConfig(context.Background())
	if err != nil {
		log.Fatalf("fn: loading the AWS config: %v", err)
	}
	client = sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = aws.String(os.Getenv("TEST_STS_ENDPOINT")) })
	lambda.Start(handle)
}
