// Package brokerclient is the extension's client of the broker's HTTP API. Its requests
// and answers are the types of package broker/api, the broker's own definition of them.
//
// Every call proves the caller's identity afresh: it signs a new single-use STS
// GetCallerIdentity proof with [attest.Sign] for the broker's audience, puts it in the
// JSON body, and signs the HTTP request itself with SigV4 (service "execute-api"), which
// API Gateway's AWS_IAM authorization checks in AWS and a local broker ignores.
//
//	c, err := brokerclient.New(brokerclient.Config{
//		BaseURL: "https://abc.execute-api.eu-west-1.amazonaws.com",
//		Audience: "prod-orders", Region: "eu-west-1",
//		Credentials: aws.CredentialsProviderFunc(...), // the execution role's credentials
//	})
//	cred, err := c.Issue(ctx, "orders", "readonly", 15*time.Minute)
//	lease, err := c.Renew(ctx, cred.LeaseID, 15*time.Minute)
//	err = c.Revoke(ctx, cred.LeaseID)
//	sess, err := c.AssumeAWS(ctx, "reports-read", 15*time.Minute) // an STS session
//
// # Errors and retries
//
// An answer other than success is an [*Error] carrying the HTTP status; when the answer
// is the broker's error document it unwraps to the broker's [*api.Error], so callers
// classify with errors.Is(err, api.ErrLeaseRevoked) or api.CodeOf(err). Calls retry by
// themselves, with exponential backoff and jitter that honours Retry-After, while
// [Retryable] says so (network failures and 5xx answers; never 3xx or 4xx), at most
// [Config.MaxAttempts] times and never past the context's deadline. Each attempt carries
// a fresh proof, since the broker accepts a proof only once.
//
// Errors never contain a password, a proof, a signature or a session token.
//
// # Only the configured broker
//
// The client talks to its base URL and nowhere else: it follows no redirect (a 3xx
// answer is a failure that is not retried, and nothing is sent to its Location — a
// redirect would otherwise carry a fresh identity proof to a host nobody configured),
// and the base URL must be https unless its host is a loopback address (127.0.0.0/8, ::1
// or localhost), where a local broker listens.
//
// # Strict answers
//
// Every answer is decoded with [api.UnmarshalAnswer]: a duplicate key, a key that
// differs from a field only in case, a NUL character or invalid UTF-8 makes the call
// fail (the credential in it is never used), because a proxy between the two may have
// read the answer another way. Fields a newer broker adds are ignored.
package brokerclient

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/extension/config"
)

// Defaults of [Config].
const (
	DefaultMaxAttempts    = 4
	DefaultBaseDelay      = 200 * time.Millisecond
	DefaultMaxDelay       = 2 * time.Second
	DefaultAttemptTimeout = 10 * time.Second
)

// ServiceName is the SigV4 service the HTTP requests are signed for.
const ServiceName = "execute-api"

// maxAnswer bounds how much of an answer is read.
const maxAnswer = 1 << 20

// Config configures a [Client]. BaseURL, Audience, Region and Credentials are required.
type Config struct {
	// BaseURL is the broker API's base URL (EPHEMERA_BROKER_URL); paths are appended. It
	// must be https unless its host is a loopback address.
	BaseURL string
	// Audience is the broker's audience, put in every proof (EPHEMERA_AUDIENCE).
	Audience string
	// Region is the SigV4 region of the API (AWS_REGION).
	Region string
	// STSRegion is the region of the STS host proofs name. Default: Region.
	STSRegion string
	// Credentials are the execution role's credentials; they sign proofs and requests.
	Credentials aws.CredentialsProvider
	// HTTPClient sends requests. Default: a client with the default transport and no
	// timeout of its own (AttemptTimeout and the context bound every attempt). Whatever
	// the client, the Client uses a copy of it that follows no redirect.
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts of one call. Default DefaultMaxAttempts.
	MaxAttempts int
	// BaseDelay and MaxDelay shape the backoff: before attempt n+1 the client waits a
	// random time between half and all of min(MaxDelay, BaseDelay·2^(n-1)), or as long
	// as the answer's Retry-After asks if that is longer, but never more than MaxDelay.
	// Defaults DefaultBaseDelay and DefaultMaxDelay.
	BaseDelay, MaxDelay time.Duration
	// AttemptTimeout bounds one attempt. Default DefaultAttemptTimeout.
	AttemptTimeout time.Duration
	// Now is the clock proofs and signatures are dated with. Default time.Now.
	Now func() time.Time
	// Logger receives one line per retried attempt (no secrets). Default: discard.
	Logger *slog.Logger
}

// Client calls the broker. It is safe for concurrent use.
type Client struct {
	cfg    Config
	base   *url.URL
	signer *v4.Signer
	sleep  func(ctx context.Context, d time.Duration) error
}

// New checks cfg, fills in defaults and returns a client.
func New(cfg Config) (*Client, error) {
	var errs []error
	u, err := url.Parse(strings.TrimRight(cfg.BaseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("base URL %q is not an http(s) URL", cfg.BaseURL))
	} else if u.Scheme != "https" && !config.IsLoopback(u.Hostname()) {
		errs = append(errs, fmt.Errorf("%w: %q", ErrInsecureURL, cfg.BaseURL))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("audience is empty"))
	}
	if cfg.Region == "" {
		errs = append(errs, errors.New("region is empty"))
	}
	if cfg.Credentials == nil {
		errs = append(errs, errors.New("credentials are missing"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("brokerclient: %w", err)
	}
	if cfg.STSRegion == "" {
		cfg.STSRegion = cfg.Region
	}
	hc := http.Client{}
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	}
	// Never follow a redirect: the request carries a fresh identity proof, which must go
	// to the configured broker only. The 3xx answer itself becomes an *Error.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.HTTPClient = &hc
	// A zero (or negative) setting takes its default: cmp.Or picks the first non-zero.
	cfg.MaxAttempts = cmp.Or(max(cfg.MaxAttempts, 0), DefaultMaxAttempts)
	cfg.BaseDelay = cmp.Or(max(cfg.BaseDelay, 0), DefaultBaseDelay)
	cfg.MaxDelay = cmp.Or(max(cfg.MaxDelay, 0), DefaultMaxDelay)
	cfg.AttemptTimeout = cmp.Or(max(cfg.AttemptTimeout, 0), DefaultAttemptTimeout)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, base: u, signer: v4.NewSigner(), sleep: sleepCtx}, nil
}

// Issue asks for a new credential for database/role with lease duration ttl (0: the
// role's default_ttl).
func (c *Client) Issue(ctx context.Context, database, role string, ttl time.Duration) (*api.Credential, error) {
	var cred api.Credential
	err := c.call(ctx, api.PathCredentials, func(p *api.Proof) any {
		return api.IssueRequest{Identity: p, Database: database, Role: role, TTLSeconds: seconds(ttl)}
	}, &cred)
	if err == nil && (cred.LeaseID == "" || cred.Username == "" || cred.ExpiresAt.IsZero()) {
		err = errors.New("the answer lacks lease_id, username or expires_at")
	}
	if err != nil {
		return nil, fmt.Errorf("brokerclient: issue %s/%s: %w", database, role, err)
	}
	return &cred, nil
}

// Renew extends the lease by ttl (0: the role's default_ttl), never past its
// max_expires_at, and returns the new expiry. The username and password stay the same.
func (c *Client) Renew(ctx context.Context, leaseID string, ttl time.Duration) (*api.Renewal, error) {
	var l api.Renewal
	err := c.leaseCall(ctx, leaseID, api.RenewPath, func(p *api.Proof) any {
		return api.RenewRequest{Identity: p, TTLSeconds: seconds(ttl)}
	}, &l)
	if err == nil && l.ExpiresAt.IsZero() {
		err = errors.New("the answer lacks expires_at")
	}
	if err != nil {
		return nil, fmt.Errorf("brokerclient: renew %s: %w", leaseID, err)
	}
	return &l, nil
}

// Revoke ends the lease now; the broker drops the role and ends its sessions. Revoking a
// revoked lease succeeds.
func (c *Client) Revoke(ctx context.Context, leaseID string) error {
	var ans api.Revocation
	err := c.leaseCall(ctx, leaseID, api.RevokePath, func(p *api.Proof) any { return api.RevokeRequest{Identity: p} }, &ans)
	if err != nil {
		return fmt.Errorf("brokerclient: revoke %s: %w", leaseID, err)
	}
	return nil
}

// AssumeAWS asks for a new STS session of the broker's AWS profile, lasting ttl (0: the
// profile's default_ttl; STS accepts 15 minutes to 12 hours). Like every call it carries a
// fresh proof and retries by the same rules.
func (c *Client) AssumeAWS(ctx context.Context, profile string, ttl time.Duration) (*api.AWSCredential, error) {
	var cred api.AWSCredential
	err := c.call(ctx, api.PathAWSCredentials, func(p *api.Proof) any {
		return api.AWSCredentialsRequest{Identity: p, Profile: profile, TTLSeconds: seconds(ttl)}
	}, &cred)
	if err == nil && (cred.AccessKeyID == "" || cred.SecretAccessKey == "" || cred.SessionToken == "" || cred.Expiration.IsZero()) {
		err = errors.New("the answer lacks access_key_id, secret_access_key, session_token or expiration")
	}
	if err != nil {
		return nil, fmt.Errorf("brokerclient: assume AWS profile %s: %w", profile, err)
	}
	return &cred, nil
}

// seconds is ttl in whole seconds, rounded up; nil (omitted: the broker's default) for 0.
func seconds(d time.Duration) *int64 {
	if d <= 0 {
		return nil
	}
	n := int64((d + time.Second - 1) / time.Second)
	return &n
}

func (c *Client) leaseCall(ctx context.Context, leaseID string, path func(string) string, body func(*api.Proof) any, dst any) error {
	if leaseID == "" || strings.ContainsAny(leaseID, "/?#") {
		return fmt.Errorf("lease id %q is not valid", leaseID)
	}
	return c.call(ctx, path(url.PathEscape(leaseID)), body, dst)
}

// call POSTs body(fresh proof) to path until it succeeds, fails for good, runs out of
// attempts or would outlive ctx, and decodes a success into dst.
func (c *Client) call(ctx context.Context, path string, body func(*api.Proof) any, dst any) error {
	for attempt := 1; ; attempt++ {
		err := c.attempt(ctx, path, body, dst)
		if err == nil || !Retryable(err) || attempt >= c.cfg.MaxAttempts || ctx.Err() != nil {
			return err
		}
		// Retry-After lengthens the wait, up to MaxDelay: the caller's budget (INIT's
		// 5 s by default) matters more than a broker's wish to be left alone longer.
		delay := max(c.backoff(attempt), min(retryAfter(err), c.cfg.MaxDelay))
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= delay {
			return err // waiting would outlive the caller's deadline
		}
		c.cfg.Logger.Warn("broker call failed; retrying", "path", path, "attempt", attempt,
			"status", StatusOf(err), "code", string(api.CodeOf(err)), "delay_ms", delay.Milliseconds(), "error", err.Error())
		if serr := c.sleep(ctx, delay); serr != nil {
			return err
		}
	}
}

// backoff is the wait after the given failed attempt: between half and all of
// min(MaxDelay, BaseDelay·2^(attempt-1)).
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BaseDelay
	for i := 1; i < attempt && d < c.cfg.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, c.cfg.MaxDelay)
	half := d / 2
	return half + rand.N(d-half+1)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attempt makes one signed request.
func (c *Client) attempt(ctx context.Context, path string, body func(*api.Proof) any, dst any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	creds, err := c.cfg.Credentials.Retrieve(ctx)
	if err != nil {
		return fmt.Errorf("retrieving AWS credentials: %w", err)
	}
	now := c.cfg.Now()
	proof, err := attest.Sign(ctx, creds, c.cfg.STSRegion, c.cfg.Audience, now)
	if err != nil {
		return err
	}
	data, err := json.Marshal(body(proof))
	if err != nil {
		return fmt.Errorf("encoding the request: %w", err)
	}
	u := *c.base
	u.Path += path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("building the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if h := TraceHeader(ctx); h != "" {
		req.Header.Set("X-Amzn-Trace-Id", h) // the invocation's trace continues at the broker
	}
	sum := sha256.Sum256(data)
	if err := c.signer.SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), ServiceName, c.cfg.Region, now.UTC()); err != nil {
		return fmt.Errorf("signing the request: %w", err)
	}
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return &transportError{err: redactURLError(err)}
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return &transportError{err: fmt.Errorf("reading the answer: %w", err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answerError(resp, answer)
	}
	// Strict: a duplicate key, a key that differs from a field only in case, or a NUL
	// fails the call (a proxy might have read the answer another way); fields a newer
	// broker adds are ignored.
	if err := api.UnmarshalAnswer(answer, dst); err != nil {
		return fmt.Errorf("decoding the answer (status %d): %w", resp.StatusCode, err)
	}
	return nil
}

type traceKey struct{}

// WithTraceHeader returns ctx carrying the X-Ray trace header of the
// invocation that caused a broker call (the INVOKE event's tracing value);
// calls made with it send the header as X-Amzn-Trace-Id. The extension
// propagates the header without linking the X-Ray SDK (it would add ~8 MB).
func WithTraceHeader(ctx context.Context, h string) context.Context {
	if h == "" {
		return ctx
	}
	return context.WithValue(ctx, traceKey{}, h)
}

// TraceHeader returns the header WithTraceHeader stored, or "".
func TraceHeader(ctx context.Context) string {
	h, _ := ctx.Value(traceKey{}).(string)
	return h
}
