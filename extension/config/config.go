// Package config reads the extension's environment once into a [Config].
//
// Every variable the extension reads, and its default:
//
//	EPHEMERA_BROKER_URL       required; the broker API's base URL: https (plain http only to a
//	                          loopback address: 127.0.0.0/8, ::1, localhost), no user info,
//	                          query or fragment (a path such as an API Gateway stage is kept)
//	EPHEMERA_AUDIENCE         required; must equal the broker's audience
//	EPHEMERA_CREDENTIALS      name=database/role[:ttl],... for example
//	                          "orders=orders/readonly:15m,audit=orders/auditor". Names match
//	                          [a-z0-9_-]+ and are unique; ttl is a Go duration of whole seconds
//	                          (omitted: the role's default_ttl at the broker)
//	EPHEMERA_AWS_PROFILES     name=profile[:ttl],... for example "reports=reports-read:30m":
//	                          AWS sessions of the broker's aws_profiles, served in the AWS SDKs'
//	                          container-credentials format. ttl is whole seconds between 15m
//	                          and 12h (the STS limits; omitted: the profile's default_ttl).
//	                          At least one of EPHEMERA_CREDENTIALS and EPHEMERA_AWS_PROFILES is
//	                          required, and names are unique across both lists
//	EPHEMERA_PORT             local API port on 127.0.0.1, default 7411 (see "The port" below)
//	EPHEMERA_INIT_TIMEOUT     bound on the INIT fetch, default 5s
//	EPHEMERA_ON_INIT_FAILURE  "fail" (default: report /init/error) or "lazy" (serve 503, keep trying)
//	EPHEMERA_STS_REGION       region of the STS host the proof names, default AWS_REGION
//	EPHEMERA_REFRESH_MARGIN   refresh when less than this is left; default 20% of each lease's
//	                          TTL, at least 5s and at most 5m (see [Config.Margin])
//	EPHEMERA_LOG_LEVEL        debug, info (default), warn or error; debug also logs each
//	                          local request (read by the extension's main, not parsed here)
//	AWS_ACCESS_KEY_ID         required; the execution role's credentials, which sign proofs
//	AWS_SECRET_ACCESS_KEY     required
//	AWS_SESSION_TOKEN         required; also the token callers of the local API present
//	AWS_REGION                required; SigV4 region of the broker API (service execute-api)
//	AWS_LAMBDA_FUNCTION_NAME  optional; only for log lines
//
// # The port
//
// Every extension of a function shares the sandbox's network namespace, so two that
// listen on the same port cannot run together. The default, 7411, is used by none of the
// common Lambda extensions, whose ports are:
//
//	2772        AWS AppConfig agent
//	2773        AWS Parameters and Secrets Lambda Extension
//	2000        AWS X-Ray daemon (UDP)
//	4243        Telemetry API listeners of the AWS samples (and extensions built from them)
//	4317, 4318  OpenTelemetry collector (ADOT and others): OTLP gRPC and HTTP
//	8080        AWS Lambda Web Adapter (the application's port)
//	8124-8126   Datadog extension (its API, DogStatsD, the trace agent)
//	8200        Elastic APM extension
//	9001        the Lambda Runtime API itself (AWS_LAMBDA_RUNTIME_API)
//
// Extensions that receive logs and traces through the Lambda Telemetry or Logs API (New
// Relic, Dynatrace, Sumo Logic, Honeycomb, Lumigo, ...) listen on a port of their own
// choosing: when you attach one, check that it is not 7411, or set EPHEMERA_PORT (and the
// same value for the function, which reads it too).
//
// [Parse] reports every bad variable at once (errors.Join), one error each, and each error
// names its variable. No error ever repeats the value of a secret variable.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/extension/localapi"
)

// Names of the variables Parse reads.
const (
	EnvBrokerURL       = "EPHEMERA_BROKER_URL"
	EnvAudience        = "EPHEMERA_AUDIENCE"
	EnvCredentials     = "EPHEMERA_CREDENTIALS"
	EnvAWSProfiles     = "EPHEMERA_AWS_PROFILES"
	EnvPort            = "EPHEMERA_PORT"
	EnvInitTimeout     = "EPHEMERA_INIT_TIMEOUT"
	EnvOnInitFailure   = "EPHEMERA_ON_INIT_FAILURE"
	EnvSTSRegion       = "EPHEMERA_STS_REGION"
	EnvRefreshMargin   = "EPHEMERA_REFRESH_MARGIN"
	EnvAccessKeyID     = "AWS_ACCESS_KEY_ID"
	EnvSecretAccessKey = "AWS_SECRET_ACCESS_KEY"
	EnvSessionToken    = "AWS_SESSION_TOKEN"
	EnvRegion          = "AWS_REGION"
	EnvFunctionName    = "AWS_LAMBDA_FUNCTION_NAME"
)

// Defaults.
const (
	DefaultPort        = localapi.DefaultPort
	DefaultInitTimeout = 5 * time.Second
	// MinMargin and MaxMargin clamp the default refresh margin (20% of a lease's TTL).
	MinMargin = 5 * time.Second
	MaxMargin = 5 * time.Minute
	// MinAWSTTL and MaxAWSTTL bound an AWS session's ttl (the limits of STS AssumeRole).
	MinAWSTTL = 15 * time.Minute
	MaxAWSTTL = 12 * time.Hour
	// SDKExpiryWindow is how long before Expiration the AWS SDKs treat container
	// credentials as expired (aws-sdk-go-v2 wraps the container provider in a credentials
	// cache with a 5-minute expiry window). The extension never serves an AWS session
	// with less than this left, or the SDK would ask again for every request.
	SDKExpiryWindow = 5 * time.Minute
)

// InitFailure says what the extension does when the INIT fetch fails.
type InitFailure string

const (
	// FailInit reports /init/error, so Lambda fails the sandbox's INIT.
	FailInit InitFailure = "fail"
	// LazyInit keeps the sandbox, answers 503 and keeps trying in the background.
	LazyInit InitFailure = "lazy"
)

// Credential is one entry of EPHEMERA_CREDENTIALS: the local name function code asks for,
// and the database role the broker issues it for.
type Credential struct {
	Name     string
	Database string
	Role     string
	// TTL is the lease duration asked for; 0 lets the broker use the role's default_ttl.
	TTL time.Duration
}

// AWSProfile is one entry of EPHEMERA_AWS_PROFILES: the local name function code asks
// for (GET /v1/aws/{name}), and the broker's AWS profile the session is assumed for.
type AWSProfile struct {
	Name    string
	Profile string
	// TTL is the session duration asked for; 0 lets the broker use the profile's default_ttl.
	TTL time.Duration
}

// Config is the parsed environment. Build it with [Parse] or [FromEnv].
type Config struct {
	BrokerURL     *url.URL
	Audience      string
	Credentials   []Credential
	AWSProfiles   []AWSProfile
	Port          int
	InitTimeout   time.Duration
	OnInitFailure InitFailure
	STSRegion     string
	// RefreshMargin is EPHEMERA_REFRESH_MARGIN, or 0 when unset (then [Config.Margin]
	// derives it from each lease's TTL).
	RefreshMargin time.Duration

	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Region          string
	FunctionName    string
}

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9_-]+$`)
	databaseRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`) // as broker/config
	roleRE     = regexp.MustCompile(`^[a-z][a-z0-9_]{0,39}$`)  // as broker/config
	regionRE   = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)
)

// FromEnv is Parse(os.Getenv).
func FromEnv() (*Config, error) { return Parse(os.Getenv) }

// Parse reads the variables listed in the package documentation through getenv
// (os.Getenv in the extension, a map in tests).
func Parse(getenv func(string) string) (*Config, error) {
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", name, fmt.Sprintf(format, args...)))
	}
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	c := &Config{
		Port:            DefaultPort,
		InitTimeout:     DefaultInitTimeout,
		OnInitFailure:   FailInit,
		Audience:        get(EnvAudience),
		AccessKeyID:     get(EnvAccessKeyID),
		SecretAccessKey: getenv(EnvSecretAccessKey),
		SessionToken:    getenv(EnvSessionToken),
		Region:          get(EnvRegion),
		FunctionName:    get(EnvFunctionName),
	}

	if v := get(EnvBrokerURL); v == "" {
		bad(EnvBrokerURL, "required (the broker API's base URL)")
	} else if u, err := parseBrokerURL(v); err != nil {
		bad(EnvBrokerURL, "%v", err)
	} else {
		c.BrokerURL = u
	}
	if c.Audience == "" {
		bad(EnvAudience, "required (must equal the broker's audience)")
	}
	credsVal, awsVal := get(EnvCredentials), get(EnvAWSProfiles)
	if credsVal == "" && awsVal == "" {
		// The message does not spell out the other variable's name, so that tooling
		// which collects the names of required variables from it is not misled.
		bad(EnvCredentials, "required (name=database/role[:ttl],...) unless AWS profiles are configured")
	}
	if credsVal != "" {
		if creds, err := ParseCredentials(credsVal); err != nil {
			bad(EnvCredentials, "%v", err)
		} else {
			c.Credentials = creds
		}
	}
	if awsVal != "" {
		if profiles, err := ParseAWSProfiles(awsVal); err != nil {
			bad(EnvAWSProfiles, "%v", err)
		} else {
			c.AWSProfiles = profiles
		}
	}
	for _, p := range c.AWSProfiles {
		if slices.ContainsFunc(c.Credentials, func(cr Credential) bool { return cr.Name == p.Name }) {
			bad(EnvAWSProfiles, "name %q is also used in %s (names are unique across both lists)", p.Name, EnvCredentials)
		}
	}
	if v := get(EnvPort); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			bad(EnvPort, "%q is not a port number (1-65535)", v)
		} else {
			c.Port = p
		}
	}
	if v := get(EnvInitTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad(EnvInitTimeout, "%q is not a positive Go duration (e.g. 5s)", v)
		} else {
			c.InitTimeout = d
		}
	}
	if v := get(EnvOnInitFailure); v != "" {
		switch InitFailure(strings.ToLower(v)) {
		case FailInit, LazyInit:
			c.OnInitFailure = InitFailure(strings.ToLower(v))
		default:
			bad(EnvOnInitFailure, "%q must be %q or %q", v, FailInit, LazyInit)
		}
	}
	if v := get(EnvRefreshMargin); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			bad(EnvRefreshMargin, "%q is not a positive Go duration (e.g. 1m)", v)
		} else {
			c.RefreshMargin = d
		}
	}

	if c.AccessKeyID == "" {
		bad(EnvAccessKeyID, "required (the execution role's credentials sign identity proofs)")
	}
	if c.SecretAccessKey == "" {
		bad(EnvSecretAccessKey, "required (the execution role's credentials sign identity proofs)")
	}
	if c.SessionToken == "" {
		bad(EnvSessionToken, "required (it is also the token of the local API)")
	}
	if c.Region == "" {
		bad(EnvRegion, "required (SigV4 region of the broker API)")
	} else if !regionRE.MatchString(c.Region) {
		bad(EnvRegion, "%q is not a region name", c.Region)
	}
	c.STSRegion = c.Region
	if v := get(EnvSTSRegion); v != "" {
		if !regionRE.MatchString(v) {
			bad(EnvSTSRegion, "%q is not a region name", v)
		}
		c.STSRegion = v
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

func parseBrokerURL(v string) (*url.URL, error) {
	u, err := url.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL", v)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%q must start with https:// (or http:// to a loopback address)", v)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q has no host", v)
	case u.Scheme == "http" && !IsLoopback(u.Hostname()):
		return nil, fmt.Errorf("%q must be https (plain http only to a loopback address: 127.0.0.0/8, ::1, localhost)", v)
	case u.User != nil:
		return nil, errors.New("must not contain user info")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("%q must not have a query or fragment", v)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// IsLoopback reports whether host (a URL's Hostname, without brackets or port) names a
// loopback address: an IPv4 address in 127.0.0.0/8, ::1, or "localhost" (any case). Only
// to such a host may the broker URL be plain http.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Zone() == "" && ip.Unmap().IsLoopback()
}

// ParseCredentials parses the value of EPHEMERA_CREDENTIALS: comma-separated
// name=database/role[:ttl] entries, blanks around entries ignored. It reports
// every bad entry, each with its position.
func ParseCredentials(s string) ([]Credential, error) {
	return parseList(s, parseCredential, func(c Credential) string { return c.Name })
}

// parseList parses a comma-separated list of entries with parse, blanks around entries
// ignored. It reports every bad entry (empty, unparsable, or with a name already used),
// each with its position.
func parseList[T any](s string, parse func(string) (T, error), name func(T) string) ([]T, error) {
	var out []T
	var errs []error
	seen := map[string]bool{}
	for i, entry := range strings.Split(s, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			errs = append(errs, fmt.Errorf("entry %d is empty", i+1))
			continue
		}
		v, err := parse(entry)
		if err != nil {
			errs = append(errs, fmt.Errorf("entry %d (%q): %w", i+1, entry, err))
			continue
		}
		n := name(v)
		if seen[n] {
			errs = append(errs, fmt.Errorf("entry %d: name %q is used twice", i+1, n))
			continue
		}
		seen[n] = true
		out = append(out, v)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func parseCredential(entry string) (Credential, error) {
	name, target, ok := strings.Cut(entry, "=")
	if !ok {
		return Credential{}, errors.New("want name=database/role[:ttl]")
	}
	c := Credential{Name: strings.TrimSpace(name)}
	target = strings.TrimSpace(target)
	if t, ttl, ok := strings.Cut(target, ":"); ok {
		target = t
		d, err := time.ParseDuration(ttl)
		switch {
		case err != nil:
			return Credential{}, fmt.Errorf("ttl %q is not a Go duration (e.g. 15m)", ttl)
		case d < time.Second:
			return Credential{}, fmt.Errorf("ttl %q must be at least 1s", ttl)
		case d%time.Second != 0:
			return Credential{}, fmt.Errorf("ttl %q must be whole seconds", ttl)
		}
		c.TTL = d
	}
	db, role, ok := strings.Cut(target, "/")
	if !ok {
		return Credential{}, errors.New("want name=database/role[:ttl]")
	}
	c.Database, c.Role = db, role
	switch {
	case !nameRE.MatchString(c.Name):
		return Credential{}, fmt.Errorf("name %q must match [a-z0-9_-]+", c.Name)
	case !databaseRE.MatchString(c.Database):
		return Credential{}, fmt.Errorf("database %q must match %s", c.Database, databaseRE)
	case !roleRE.MatchString(c.Role):
		return Credential{}, fmt.Errorf("role %q must match %s", c.Role, roleRE)
	}
	return c, nil
}

// ParseAWSProfiles parses the value of EPHEMERA_AWS_PROFILES: comma-separated
// name=profile[:ttl] entries, blanks around entries ignored. It reports every bad entry,
// each with its position.
func ParseAWSProfiles(s string) ([]AWSProfile, error) {
	return parseList(s, parseAWSProfile, func(p AWSProfile) string { return p.Name })
}

func parseAWSProfile(entry string) (AWSProfile, error) {
	name, target, ok := strings.Cut(entry, "=")
	if !ok {
		return AWSProfile{}, errors.New("want name=profile[:ttl]")
	}
	p := AWSProfile{Name: strings.TrimSpace(name), Profile: strings.TrimSpace(target)}
	if prof, ttl, ok := strings.Cut(p.Profile, ":"); ok {
		p.Profile = prof
		d, err := time.ParseDuration(ttl)
		switch {
		case err != nil:
			return AWSProfile{}, fmt.Errorf("ttl %q is not a Go duration (e.g. 30m)", ttl)
		case d < MinAWSTTL || d > MaxAWSTTL:
			return AWSProfile{}, fmt.Errorf("ttl %q must be between 15m and 12h (the STS limits)", ttl)
		case d%time.Second != 0:
			return AWSProfile{}, fmt.Errorf("ttl %q must be whole seconds", ttl)
		}
		p.TTL = d
	}
	switch {
	case !nameRE.MatchString(p.Name):
		return AWSProfile{}, fmt.Errorf("name %q must match [a-z0-9_-]+", p.Name)
	case !databaseRE.MatchString(p.Profile): // the broker's rule for aws_profiles names
		return AWSProfile{}, fmt.Errorf("profile %q must match %s", p.Profile, databaseRE)
	}
	return p, nil
}

// Margin is the refresh margin for a lease of duration ttl: EPHEMERA_REFRESH_MARGIN
// when set, else 20% of ttl clamped to [MinMargin, MaxMargin]. Either way it is at most
// half of ttl (when ttl is known), so that a fresh lease is never already due for refresh.
func (c *Config) Margin(ttl time.Duration) time.Duration { return Margin(c.RefreshMargin, ttl) }

// Margin computes the refresh margin from a fixed margin (0: derive from ttl) and a lease's
// TTL, as [Config.Margin] documents.
func Margin(fixed, ttl time.Duration) time.Duration {
	m := fixed
	if m <= 0 {
		m = min(max(ttl/5, MinMargin), MaxMargin)
	}
	if ttl > 0 && m > ttl/2 {
		m = ttl / 2
	}
	return m
}

// AWSMargin is the refresh margin of an AWS session of duration ttl: the larger of
// [SDKExpiryWindow] and [Margin](fixed, ttl). The SDKs ask again for credentials with less
// than SDKExpiryWindow left, so a session is replaced before that.
func AWSMargin(fixed, ttl time.Duration) time.Duration {
	return max(SDKExpiryWindow, Margin(fixed, ttl))
}

// AWSProfileNames returns the configured AWS profile names in order.
func (c *Config) AWSProfileNames() []string {
	names := make([]string, len(c.AWSProfiles))
	for i, p := range c.AWSProfiles {
		names[i] = p.Name
	}
	return names
}

// CredentialNames returns the configured names in order.
func (c *Config) CredentialNames() []string {
	names := make([]string, len(c.Credentials))
	for i, cr := range c.Credentials {
		names[i] = cr.Name
	}
	return names
}
