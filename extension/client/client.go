package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/localapi"
)

const (
	// EnvPort names the extension's local port; default DefaultPort.
	EnvPort = "EPHEMERA_PORT"
	// EnvToken names the variable whose value the extension expects in
	// the X-Ephemera-Token header: the sandbox's AWS session token.
	EnvToken = "AWS_SESSION_TOKEN"
	// DefaultPort is the extension's local port when EPHEMERA_PORT is unset.
	DefaultPort = localapi.DefaultPort
	// DefaultTimeout bounds one request of the default HTTP client.
	DefaultTimeout = 30 * time.Second

	tokenHeader  = localapi.HeaderToken
	maxBodyBytes = 1 << 20
)

// Client is the Source backed by the ephemera extension's local API
// (GET http://127.0.0.1:PORT/v1/credentials/{name}). The extension caches
// and renews credentials; every call is one local HTTP request. A Client is
// safe for concurrent use.
type Client struct {
	baseURL string
	token   string
	hc      *http.Client
	err     error // configuration error, returned by every call
}

// Option configures New.
type Option func(*settings)

type settings struct {
	port    *int
	token   *string
	hc      *http.Client
	baseURL string
}

// WithPort sets the extension's local port. Default: EPHEMERA_PORT, or
// DefaultPort (7411) when it is unset.
func WithPort(port int) Option { return func(s *settings) { s.port = &port } }

// WithToken sets the token sent in X-Ephemera-Token. Default: the value of
// AWS_SESSION_TOKEN when New is called (the extension expects exactly that).
func WithToken(token string) Option { return func(s *settings) { s.token = &token } }

// WithHTTPClient sets the HTTP client. Default: a client with a 30 s
// timeout that uses no proxy. Whatever the client, redirects are never
// followed, so the token is only ever sent to the extension.
func WithHTTPClient(hc *http.Client) Option { return func(s *settings) { s.hc = hc } }

// WithBaseURL sets the extension's base URL, e.g. an httptest.Server's URL
// in tests. It takes precedence over WithPort. Default:
// http://127.0.0.1:PORT.
func WithBaseURL(baseURL string) Option { return func(s *settings) { s.baseURL = baseURL } }

// New returns a Client. It reads EPHEMERA_PORT and AWS_SESSION_TOKEN once,
// now, for the settings that no option gives. New does not fail: a bad
// setting (an EPHEMERA_PORT that is not a port, say) is returned by every
// call of the Client instead.
func New(opts ...Option) *Client {
	var s settings
	for _, o := range opts {
		o(&s)
	}
	c := &Client{}
	switch {
	case s.baseURL != "":
		u, err := url.Parse(s.baseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			c.err = errors.New("client: base URL must be an absolute http(s) URL")
		}
		c.baseURL = strings.TrimRight(s.baseURL, "/")
	default:
		port := DefaultPort
		if s.port != nil {
			port = *s.port
		} else if v := os.Getenv(EnvPort); v != "" {
			p, err := strconv.Atoi(v)
			if err != nil {
				p = -1
			}
			port = p
		}
		if port < 1 || port > 65535 {
			c.err = fmt.Errorf("client: invalid port (set %s to 1-65535, or use WithPort)", EnvPort)
		}
		c.baseURL = "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	if s.token != nil {
		c.token = *s.token
	} else {
		c.token = os.Getenv(EnvToken)
	}
	if c.err == nil && c.token == "" {
		c.err = fmt.Errorf("client: no token (%s is empty; use WithToken): %w", EnvToken, ErrUnauthorized)
	}
	hc := s.hc
	if hc == nil {
		hc = &http.Client{
			Timeout:   DefaultTimeout,
			Transport: &http.Transport{Proxy: nil, MaxIdleConns: 4, IdleConnTimeout: 90 * time.Second},
		}
	}
	copied := *hc // never follow redirects: the token must not travel elsewhere
	copied.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &copied
	return c
}

// Credentials returns the current credential of name. The extension renews
// it before it expires; call Credentials again rather than keeping the
// result for long.
func (c *Client) Credentials(ctx context.Context, name string) (*Credential, error) {
	return c.get(ctx, name, false)
}

// Refresh asks the extension for a new credential of name
// (?refresh=true), e.g. after the database refused the current one.
func (c *Client) Refresh(ctx context.Context, name string) (*Credential, error) {
	return c.get(ctx, name, true)
}

func (c *Client) get(ctx context.Context, name string, refresh bool) (*Credential, error) {
	if c.err != nil {
		return nil, c.err
	}
	if name == "" {
		return nil, errors.New("client: empty credential name")
	}
	u := c.baseURL + localapi.PathCredentials + url.PathEscape(name)
	if refresh {
		u += "?refresh=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("client: credential %q: %w", name, err)
	}
	req.Header.Set(tokenHeader, c.token)
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		// *url.Error names the URL, which holds no secret (the token
		// travels in a header).
		return nil, fmt.Errorf("client: credential %q: %w", name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("client: credential %q: read response: %w", name, err)
	}
	if len(body) > maxBodyBytes {
		return nil, fmt.Errorf("client: credential %q: response larger than %d bytes", name, maxBodyBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorResponse(name, resp.StatusCode, body)
	}
	var w localapi.Credential
	if err := api.UnmarshalAnswer(body, &w); err != nil {
		// Not %w: a decoding error may quote part of the body. Strict decoding: a
		// duplicate key, a case variant of a field or a NUL is no credential either.
		return nil, fmt.Errorf("client: credential %q: response is not a credential object", name)
	}
	cred, err := fromWire(w)
	if err != nil {
		return nil, fmt.Errorf("client: credential %q: %w", name, err)
	}
	if cred.Name == "" {
		cred.Name = name
	}
	return cred, nil
}

// errorResponse decodes {"error":{"code","message"}} (strictly); a body of
// another shape still gives an *Error with the status.
func errorResponse(name string, status int, body []byte) error {
	var e localapi.ErrorDocument
	if api.UnmarshalAnswer(body, &e) != nil {
		e = localapi.ErrorDocument{}
	}
	return &Error{Name: name, StatusCode: status, Code: cleanMessage(e.Error.Code), Message: cleanMessage(e.Error.Message)}
}

// defaultClient is made on first use (a variable so tests can reset it).
var defaultClient = sync.OnceValue(func() *Client { return New() })

// Credentials returns the current credential of name from the extension,
// using a Client made by New() on first use.
func Credentials(ctx context.Context, name string) (*Credential, error) {
	return defaultClient().Credentials(ctx, name)
}
