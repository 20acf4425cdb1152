package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/endpointcreds"

	"github.com/ephemera-sh/ephemera/extension/localapi"
)

const (
	// EnvRegion names the variable AWSConfig takes the region from.
	EnvRegion = "AWS_REGION"
	// AWSExpiryWindow is how long before a session's Expiration the credentials cache of
	// AWSCredentialsProvider asks the extension again: 5 minutes, as aws-sdk-go-v2 does for
	// AWS_CONTAINER_CREDENTIALS_FULL_URI. The extension never serves a session with less
	// than that left.
	AWSExpiryWindow = 5 * time.Minute
)

// AWSCredentialsProvider returns the credentials of the extension's AWS session called
// name (a name of its EPHEMERA_AWS_PROFILES): aws-sdk-go-v2's container credentials
// provider (endpointcreds) pointed at http://127.0.0.1:PORT/v1/aws/<name>, sending the
// client's token as its AuthorizationToken, wrapped in an aws.CredentialsCache that asks
// the extension again AWSExpiryWindow before the session's Expiration. Nothing is fetched
// until the first Retrieve.
func (c *Client) AWSCredentialsProvider(name string) (*aws.CredentialsCache, error) {
	if c.err != nil {
		return nil, c.err
	}
	if name == "" {
		return nil, errors.New("client: empty AWS profile name")
	}
	p := endpointcreds.New(c.baseURL+localapi.PathAWS+url.PathEscape(name), func(o *endpointcreds.Options) {
		o.AuthorizationToken = c.token
		o.HTTPClient = c.hc
	})
	return aws.NewCredentialsCache(p, func(o *aws.CredentialsCacheOptions) { o.ExpiryWindow = AWSExpiryWindow }), nil
}

// AWSConfig returns an aws.Config whose Credentials are the extension's AWS session called
// name ([Client.AWSCredentialsProvider]) and whose Region is AWS_REGION; everything else
// is aws-sdk-go-v2's default configuration (config.LoadDefaultConfig), except that the
// function's own credentials (AWS_ACCESS_KEY_ID, ...) are not used. Build service clients
// from it as usual:
//
//	cfg, err := client.New().AWSConfig(ctx, "reports")
//	s3c := s3.NewFromConfig(cfg)
func (c *Client) AWSConfig(ctx context.Context, name string) (aws.Config, error) {
	p, err := c.AWSCredentialsProvider(name)
	if err != nil {
		return aws.Config{}, err
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithCredentialsProvider(p)}
	if r := os.Getenv(EnvRegion); r != "" {
		opts = append(opts, awsconfig.WithRegion(r))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("client: AWS config for %q: %w", name, err)
	}
	return cfg, nil
}

// AWSConfig is New(opts...).AWSConfig(ctx, name): an aws.Config whose credentials are the
// extension's AWS session called name.
func AWSConfig(ctx context.Context, name string, opts ...Option) (aws.Config, error) {
	return New(opts...).AWSConfig(ctx, name)
}
