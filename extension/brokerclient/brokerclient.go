// Package brokerclient is the extension's client of the broker HTTP API (DESIGN §4).
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
// An answer other than success is an [*Error] carrying the broker's code and HTTP status.
// Calls retry by themselves, with exponential backoff and jitter, while [Retryable] says
// so (network failures and 5xx answers; never 4xx), at most [Config.MaxAttempts] times
// and never past the context's deadline. Each attempt carries a fresh proof, since the
// broker accepts a proof only once.
//
// Errors never contain a password, a proof, a signature or a session token, and
// [Credential] prints its password as "[redacted]", [AWSCredential] its secret access key
// and session token.
package brokerclient

import (
	"bytes"
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

	"github.com/ephemera-sh/ephemera/broker/attest"
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
	// BaseURL is the broker API's base URL (EPHEMERA_BROKER_URL); paths are appended.
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
	// timeout of its own (AttemptTimeout and the context bound every attempt).
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts of one call. Default DefaultMaxAttempts.
	MaxAttempts int
	// BaseDelay and MaxDelay shape the backoff: before attempt n+1 the client waits a
	// random time between half and all of min(MaxDelay, BaseDelay·2^(n-1)).
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
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.MaxAttempts < 1 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = DefaultBaseDelay
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = DefaultMaxDelay
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Client{cfg: cfg, base: u, signer: v4.NewSigner(), sleep: sleepCtx}, nil
}

// Credential is the broker's answer to an issue request (DESIGN §4). Its String,
// GoString and LogValue methods hide the password.
type Credential struct {
	LeaseID      string    `json:"lease_id"`
	Database     string    `json:"database"`
	Role         string    `json:"role"`
	Username     string    `json:"username"`
	Password     string    `json:"password"`
	Host         string    `json:"host"`
	Port         int       `json:"port"`
	DBName       string    `json:"dbname"`
	SSLMode      string    `json:"sslmode"`
	IssuedAt     time.Time `json:"issued_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	MaxExpiresAt time.Time `json:"max_expires_at"`
	Renewable    bool      `json:"renewable"`
}

// String describes the credential without its password.
func (c Credential) String() string {
	return fmt.Sprintf("{lease %s %s/%s user %s password [redacted] %s:%d/%s sslmode %s expires %s max %s}",
		c.LeaseID, c.Database, c.Role, c.Username, c.Host, c.Port, c.DBName, c.SSLMode,
		c.ExpiresAt.Format(time.RFC3339), c.MaxExpiresAt.Format(time.RFC3339))
}

// GoString is String, so that %#v hides the password too.
func (c Credential) GoString() string { return "brokerclient.Credential" + c.String() }

// LogValue logs the credential without its password.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("lease_id", c.LeaseID), slog.String("database", c.Database), slog.String("role", c.Role),
		slog.String("username", c.Username), slog.Time("expires_at", c.ExpiresAt), slog.Time("max_expires_at", c.MaxExpiresAt))
}

// Lease is the broker's answer to a renewal.
type Lease struct {
	LeaseID      string    `json:"lease_id"`
	ExpiresAt    time.Time `json:"expires_at"`
	MaxExpiresAt time.Time `json:"max_expires_at"`
}

// Error is an answer of the broker (or of API Gateway in front of it) other than success.
type Error struct {
	// Status is the HTTP status.
	Status int
	// Code is the broker's error code (DESIGN §4), or "" when the answer was not a broker
	// error document (for example API Gateway refusing the SigV4 signature).
	Code string
	// Message is the broker's message, which never holds a secret.
	Message string
	// RequestID is the broker's X-Request-Id, for finding its log line and audit record.
	RequestID string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("broker answered %d", e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RequestID != "" {
		s += " (request " + e.RequestID + ")"
	}
	return s
}

// CodeOf returns the broker error code in err's chain, or "".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// StatusOf returns the broker's HTTP status in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Retryable reports whether trying again may succeed: the broker answered 5xx, or it was
// not reached or did not answer in time. A 4xx answer, a cancelled context and a local
// failure (signing, encoding) are not retryable.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status >= 500
	}
	if errors.Is(err, context.Canceled) {
		return false
	}
	var te *transportError
	return errors.As(err, &te) || errors.Is(err, context.DeadlineExceeded)
}

// transportError marks a failure to get an answer at all.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// Issue asks for a new credential for database/role with lease duration ttl (0: the
// role's default_ttl).
func (c *Client) Issue(ctx context.Context, database, role string, ttl time.Duration) (*Credential, error) {
	var cred Credential
	err := c.call(ctx, "/v1/credentials", func(p *attest.Proof) any {
		return issueRequest{Identity: p, Database: database, Role: role, TTLSeconds: seconds(ttl)}
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
func (c *Client) Renew(ctx context.Context, leaseID string, ttl time.Duration) (*Lease, error) {
	var l Lease
	err := c.leaseCall(ctx, leaseID, "renew", func(p *attest.Proof) any {
		return renewRequest{Identity: p, TTLSeconds: seconds(ttl)}
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
	var ans struct {
		LeaseID   string    `json:"lease_id"`
		RevokedAt time.Time `json:"revoked_at"`
	}
	err := c.leaseCall(ctx, leaseID, "revoke", func(p *attest.Proof) any { return revokeRequest{Identity: p} }, &ans)
	if err != nil {
		return fmt.Errorf("brokerclient: revoke %s: %w", leaseID, err)
	}
	return nil
}

// AWSCredential is the broker's answer to POST /v1/aws-credentials: a temporary STS session
// of an AWS profile. Its String, GoString and LogValue methods hide the secret access key
// and the session token. LeaseID only names the session in the broker's audit: an STS
// session cannot be renewed or revoked.
type AWSCredential struct {
	LeaseID         string    `json:"lease_id"`
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key"`
	SessionToken    string    `json:"session_token"`
	Expiration      time.Time `json:"expiration"`
}

// String describes the session without its secret access key and session token.
func (c AWSCredential) String() string {
	return fmt.Sprintf("{lease %s access key %s secret [redacted] token [redacted] expires %s}",
		c.LeaseID, c.AccessKeyID, c.Expiration.Format(time.RFC3339))
}

// GoString is String, so that %#v hides the secrets too.
func (c AWSCredential) GoString() string { return "brokerclient.AWSCredential" + c.String() }

// LogValue logs the session without its secret access key and session token.
func (c AWSCredential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("lease_id", c.LeaseID), slog.String("access_key_id", c.AccessKeyID),
		slog.Time("expiration", c.Expiration))
}

// AssumeAWS asks for a new STS session of the broker's AWS profile, lasting ttl (0: the
// profile's default_ttl; STS accepts 15 minutes to 12 hours). Like every call it carries a
// fresh proof and retries by the same rules.
func (c *Client) AssumeAWS(ctx context.Context, profile string, ttl time.Duration) (*AWSCredential, error) {
	var cred AWSCredential
	err := c.call(ctx, "/v1/aws-credentials", func(p *attest.Proof) any {
		return awsRequest{Identity: p, Profile: profile, TTLSeconds: seconds(ttl)}
	}, &cred)
	if err == nil && (cred.AccessKeyID == "" || cred.SecretAccessKey == "" || cred.SessionToken == "" || cred.Expiration.IsZero()) {
		err = errors.New("the answer lacks access_key_id, secret_access_key, session_token or expiration")
	}
	if err != nil {
		return nil, fmt.Errorf("brokerclient: assume AWS profile %s: %w", profile, err)
	}
	return &cred, nil
}

type awsRequest struct {
	Identity   *attest.Proof `json:"identity"`
	Profile    string        `json:"profile"`
	TTLSeconds int64         `json:"ttl_seconds,omitempty"`
}

type issueRequest struct {
	Identity   *attest.Proof `json:"identity"`
	Database   string        `json:"database"`
	Role       string        `json:"role"`
	TTLSeconds int64         `json:"ttl_seconds,omitempty"`
}

type renewRequest struct {
	Identity   *attest.Proof `json:"identity"`
	TTLSeconds int64         `json:"ttl_seconds,omitempty"`
}

type revokeRequest struct {
	Identity *attest.Proof `json:"identity"`
}

func seconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

func (c *Client) leaseCall(ctx context.Context, leaseID, action string, body func(*attest.Proof) any, dst any) error {
	if leaseID == "" || strings.ContainsAny(leaseID, "/?#") {
		return fmt.Errorf("lease id %q is not valid", leaseID)
	}
	return c.call(ctx, "/v1/leases/"+url.PathEscape(leaseID)+"/"+action, body, dst)
}

// call POSTs body(fresh proof) to path until it succeeds, fails for good, runs out of
// attempts or would outlive ctx, and decodes a success into dst.
func (c *Client) call(ctx context.Context, path string, body func(*attest.Proof) any, dst any) error {
	for attempt := 1; ; attempt++ {
		err := c.attempt(ctx, path, body, dst)
		if err == nil || !Retryable(err) || attempt >= c.cfg.MaxAttempts || ctx.Err() != nil {
			return err
		}
		delay := c.backoff(attempt)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= delay {
			return err // waiting would outlive the caller's deadline
		}
		c.cfg.Logger.Warn("broker call failed; retrying", "path", path, "attempt", attempt,
			"status", StatusOf(err), "code", CodeOf(err), "delay_ms", delay.Milliseconds(), "error", err.Error())
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
func (c *Client) attempt(ctx context.Context, path string, body func(*attest.Proof) any, dst any) error {
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
	if err := json.Unmarshal(answer, dst); err != nil {
		return fmt.Errorf("decoding the answer (status %d): %w", resp.StatusCode, err)
	}
	return nil
}

// redactURLError keeps a transport error's operation and cause; the URL it names is the
// broker's, which holds no secret, but nothing else of the request is kept.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return &url.Error{Op: ue.Op, URL: ue.URL, Err: ue.Err}
	}
	return err
}

// answerError builds the *Error of a failed answer.
func answerError(resp *http.Response, body []byte) *Error {
	e := &Error{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")}
	var doc struct {
		Error *struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"request_id"`
		} `json:"error"`
		Message string `json:"message"` // API Gateway's own answers
	}
	if json.Unmarshal(body, &doc) == nil {
		switch {
		case doc.Error != nil:
			e.Code, e.Message = doc.Error.Code, doc.Error.Message
			if e.RequestID == "" {
				e.RequestID = doc.Error.RequestID
			}
		case doc.Message != "":
			e.Message = doc.Message
		}
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	if len(e.Message) > 300 {
		e.Message = e.Message[:300] + "…"
	}
	return e
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
