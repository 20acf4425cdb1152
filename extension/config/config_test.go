package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/extension/config"
)

func baseEnv() map[string]string {
	return map[string]string{
		config.EnvBrokerURL:       "https://abc.execute-api.eu-west-1.amazonaws.com/prod/",
		config.EnvAudience:        "prod-orders",
		config.EnvCredentials:     "orders=orders/readonly:15m, audit=orders/auditor",
		config.EnvAccessKeyID:     "ASIAEXAMPLE",
		config.EnvSecretAccessKey: "s3cr3t-value",
		config.EnvSessionToken:    "session-token-value",
		config.EnvRegion:          "eu-west-1",
		config.EnvFunctionName:    "orders-fn",
	}
}

func parse(env map[string]string) (*config.Config, error) {
	return config.Parse(func(k string) string { return env[k] })
}

func TestParseDefaults(t *testing.T) {
	c, err := parse(baseEnv())
	if err != nil {
		t.Fatal(err)
	}
	if got := c.BrokerURL.String(); got != "https://abc.execute-api.eu-west-1.amazonaws.com/prod" {
		t.Errorf("BrokerURL = %q", got)
	}
	if c.Port != 7411 || c.InitTimeout != 5*time.Second || c.OnInitFailure != config.FailInit {
		t.Errorf("defaults: port %d timeout %v mode %q", c.Port, c.InitTimeout, c.OnInitFailure)
	}
	if c.STSRegion != "eu-west-1" || c.RefreshMargin != 0 {
		t.Errorf("STSRegion %q RefreshMargin %v", c.STSRegion, c.RefreshMargin)
	}
	want := []config.Credential{
		{Name: "orders", Database: "orders", Role: "readonly", TTL: 15 * time.Minute},
		{Name: "audit", Database: "orders", Role: "auditor"},
	}
	if len(c.Credentials) != len(want) {
		t.Fatalf("Credentials = %+v", c.Credentials)
	}
	for i := range want {
		if c.Credentials[i] != want[i] {
			t.Errorf("Credentials[%d] = %+v, want %+v", i, c.Credentials[i], want[i])
		}
	}
	if got := strings.Join(c.CredentialNames(), ","); got != "orders,audit" {
		t.Errorf("CredentialNames = %q", got)
	}
}

func TestParseOverrides(t *testing.T) {
	env := baseEnv()
	env[config.EnvPort] = "9000"
	env[config.EnvInitTimeout] = "750ms"
	env[config.EnvOnInitFailure] = "LAZY"
	env[config.EnvSTSRegion] = "us-east-1"
	env[config.EnvRefreshMargin] = "90s"
	c, err := parse(env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 9000 || c.InitTimeout != 750*time.Millisecond || c.OnInitFailure != config.LazyInit ||
		c.STSRegion != "us-east-1" || c.RefreshMargin != 90*time.Second {
		t.Errorf("got %+v", c)
	}
}

func TestParseBadVariables(t *testing.T) {
	tests := []struct {
		name, variable, value, want string
	}{
		{"broker url missing", config.EnvBrokerURL, "", "EPHEMERA_BROKER_URL: required"},
		{"broker url scheme", config.EnvBrokerURL, "ftp://x/", "EPHEMERA_BROKER_URL: \"ftp://x/\" must start with https://"},
		{"broker url no host", config.EnvBrokerURL, "http://", "EPHEMERA_BROKER_URL: \"http://\" has no host"},
		{"broker url query", config.EnvBrokerURL, "https://h/?a=b", "EPHEMERA_BROKER_URL: \"https://h/?a=b\" must not have a query or fragment"},
		{"broker url user", config.EnvBrokerURL, "https://u:p@h/", "EPHEMERA_BROKER_URL: must not contain user info"},
		{"broker url plain http", config.EnvBrokerURL, "http://broker.example.com/", "EPHEMERA_BROKER_URL: \"http://broker.example.com/\" must be https"},
		{"broker url plain http to a private address", config.EnvBrokerURL, "http://10.0.0.1:8080", "must be https"},
		{"broker url plain http to a name that starts like loopback", config.EnvBrokerURL, "http://127.0.0.1.nip.io/", "must be https"},
		{"audience missing", config.EnvAudience, "", "EPHEMERA_AUDIENCE: required"},
		{"credentials missing", config.EnvCredentials, " ", "EPHEMERA_CREDENTIALS: required"},
		{"credentials no equals", config.EnvCredentials, "orders", "EPHEMERA_CREDENTIALS: entry 1 (\"orders\"): want name=database/role[:ttl]"},
		{"credentials no slash", config.EnvCredentials, "a=orders", "EPHEMERA_CREDENTIALS: entry 1 (\"a=orders\"): want name=database/role[:ttl]"},
		{"credentials bad name", config.EnvCredentials, "Orders=orders/ro", "name \"Orders\" must match [a-z0-9_-]+"},
		{"credentials bad database", config.EnvCredentials, "a=Or ders/ro", "database \"Or ders\" must match"},
		{"credentials bad role", config.EnvCredentials, "a=orders/read-only", "role \"read-only\" must match"},
		{"credentials bad ttl", config.EnvCredentials, "a=orders/ro:15", "ttl \"15\" is not a Go duration"},
		{"credentials short ttl", config.EnvCredentials, "a=orders/ro:500ms", "ttl \"500ms\" must be at least 1s"},
		{"credentials fractional ttl", config.EnvCredentials, "a=orders/ro:1500ms", "ttl \"1500ms\" must be whole seconds"},
		{"credentials duplicate", config.EnvCredentials, "a=orders/ro,a=orders/rw", "entry 2: name \"a\" is used twice"},
		{"credentials empty entry", config.EnvCredentials, "a=orders/ro,,b=orders/rw", "entry 2 is empty"},
		{"port text", config.EnvPort, "http", "EPHEMERA_PORT: \"http\" is not a port number"},
		{"port zero", config.EnvPort, "0", "EPHEMERA_PORT: \"0\" is not a port number"},
		{"port big", config.EnvPort, "65536", "EPHEMERA_PORT: \"65536\" is not a port number"},
		{"init timeout", config.EnvInitTimeout, "5", "EPHEMERA_INIT_TIMEOUT: \"5\" is not a positive Go duration"},
		{"init timeout negative", config.EnvInitTimeout, "-1s", "EPHEMERA_INIT_TIMEOUT: \"-1s\" is not a positive Go duration"},
		{"on init failure", config.EnvOnInitFailure, "retry", "EPHEMERA_ON_INIT_FAILURE: \"retry\" must be \"fail\" or \"lazy\""},
		{"sts region", config.EnvSTSRegion, "eu west", "EPHEMERA_STS_REGION: \"eu west\" is not a region name"},
		{"refresh margin", config.EnvRefreshMargin, "0s", "EPHEMERA_REFRESH_MARGIN: \"0s\" is not a positive Go duration"},
		{"access key", config.EnvAccessKeyID, "", "AWS_ACCESS_KEY_ID: required"},
		{"secret key", config.EnvSecretAccessKey, "", "AWS_SECRET_ACCESS_KEY: required"},
		{"session token", config.EnvSessionToken, "", "AWS_SESSION_TOKEN: required"},
		{"region missing", config.EnvRegion, "", "AWS_REGION: required"},
		{"region bad", config.EnvRegion, "eu/west", "AWS_REGION: \"eu/west\" is not a region name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := baseEnv()
			env[tt.variable] = tt.value
			c, err := parse(env)
			if err == nil {
				t.Fatalf("no error, config %+v", c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "config: "+tt.variable+": ") {
				t.Errorf("error %q does not start by naming %s", err, tt.variable)
			}
			for _, secret := range []string{"s3cr3t-value", "session-token-value"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q leaks a secret", err)
				}
			}
		})
	}
}

func TestParseCollectsAllErrors(t *testing.T) {
	c, err := parse(map[string]string{config.EnvPort: "x"})
	if err == nil {
		t.Fatalf("no error, config %+v", c)
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("error %T is not joined", err)
	}
	for _, v := range []string{config.EnvBrokerURL, config.EnvAudience, config.EnvCredentials, config.EnvPort,
		config.EnvAccessKeyID, config.EnvSecretAccessKey, config.EnvSessionToken, config.EnvRegion} {
		if !strings.Contains(err.Error(), "config: "+v+": ") {
			t.Errorf("error does not name %s:\n%v", v, err)
		}
	}
	if n := len(joined.Unwrap()); n != 8 {
		t.Errorf("%d errors, want 8 (one per bad variable):\n%v", n, err)
	}
}

func TestMargin(t *testing.T) {
	tests := []struct {
		fixed, ttl, want time.Duration
	}{
		{0, 15 * time.Minute, 3 * time.Minute}, // 20%
		{0, time.Hour, 5 * time.Minute},        // clamped to 5m
		{0, 10 * time.Hour, 5 * time.Minute},   // clamped to 5m
		{0, 20 * time.Second, 5 * time.Second}, // clamped to 5s
		{0, 6 * time.Second, 3 * time.Second},  // never more than half the TTL
		{time.Minute, 15 * time.Minute, time.Minute},
		{time.Minute, 30 * time.Second, 15 * time.Second},
		{0, 0, 5 * time.Second},
	}
	for _, tt := range tests {
		if got := config.Margin(tt.fixed, tt.ttl); got != tt.want {
			t.Errorf("Margin(%v, %v) = %v, want %v", tt.fixed, tt.ttl, got, tt.want)
		}
	}
	c := &config.Config{RefreshMargin: 2 * time.Minute}
	if got := c.Margin(time.Hour); got != 2*time.Minute {
		t.Errorf("Config.Margin = %v", got)
	}
}

func TestParseAWSProfiles(t *testing.T) {
	env := baseEnv()
	env[config.EnvAWSProfiles] = " reports=reports-read:30m , billing=billing-read "
	c, err := parse(env)
	if err != nil {
		t.Fatal(err)
	}
	want := []config.AWSProfile{
		{Name: "reports", Profile: "reports-read", TTL: 30 * time.Minute},
		{Name: "billing", Profile: "billing-read"},
	}
	if len(c.AWSProfiles) != len(want) {
		t.Fatalf("AWSProfiles = %+v", c.AWSProfiles)
	}
	for i := range want {
		if c.AWSProfiles[i] != want[i] {
			t.Errorf("AWSProfiles[%d] = %+v, want %+v", i, c.AWSProfiles[i], want[i])
		}
	}
	if got := strings.Join(c.AWSProfileNames(), ","); got != "reports,billing" {
		t.Errorf("AWSProfileNames = %q", got)
	}
	if len(c.Credentials) != 2 {
		t.Errorf("Credentials = %+v", c.Credentials)
	}
}

// EPHEMERA_CREDENTIALS is optional when EPHEMERA_AWS_PROFILES is set, and the other way
// round; one of the two is required.
func TestParseEitherList(t *testing.T) {
	env := baseEnv()
	delete(env, config.EnvCredentials)
	env[config.EnvAWSProfiles] = "reports=reports-read"
	c, err := parse(env)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Credentials) != 0 || len(c.AWSProfiles) != 1 {
		t.Fatalf("credentials %+v profiles %+v", c.Credentials, c.AWSProfiles)
	}

	delete(env, config.EnvAWSProfiles)
	_, err = parse(env)
	if err == nil || err.Error() != "config: EPHEMERA_CREDENTIALS: required (name=database/role[:ttl],...) unless AWS profiles are configured" {
		t.Fatalf("neither list: %v", err)
	}
}

func TestParseBadAWSProfiles(t *testing.T) {
	tests := []struct{ name, value, want string }{
		{"no equals", "reports", `entry 1 ("reports"): want name=profile[:ttl]`},
		{"bad name", "Reports=reports-read", `name "Reports" must match [a-z0-9_-]+`},
		{"bad profile", "r=Reports Read", `profile "Reports Read" must match`},
		{"empty profile", "r=", `profile "" must match`},
		{"ttl not a duration", "r=reports-read:900", `ttl "900" is not a Go duration`},
		{"ttl below the STS minimum", "r=reports-read:14m59s", `ttl "14m59s" must be between 15m and 12h`},
		{"ttl above the STS maximum", "r=reports-read:12h1s", `ttl "12h1s" must be between 15m and 12h`},
		{"fractional ttl", "r=reports-read:15m0.5s", `ttl "15m0.5s" must be whole seconds`},
		{"duplicate", "r=reports-read,r=billing-read", `entry 2: name "r" is used twice`},
		{"empty entry", "r=reports-read,,s=x", "entry 2 is empty"},
		{"name used by a database credential", "orders=reports-read", `name "orders" is also used in EPHEMERA_CREDENTIALS`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := baseEnv()
			env[config.EnvAWSProfiles] = tt.value
			c, err := parse(env)
			if err == nil {
				t.Fatalf("no error, config %+v", c)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "config: EPHEMERA_AWS_PROFILES: ") {
				t.Errorf("error %q does not start by naming EPHEMERA_AWS_PROFILES", err)
			}
		})
	}
}

func TestAWSMargin(t *testing.T) {
	tests := []struct{ fixed, ttl, want time.Duration }{
		{0, 15 * time.Minute, 5 * time.Minute}, // 20% is 3m: the SDKs' 5m window wins
		{0, time.Hour, 5 * time.Minute},        // 20% clamped to 5m
		{0, 0, 5 * time.Minute},                // ttl not known yet
		{10 * time.Minute, time.Hour, 10 * time.Minute},
		{10 * time.Minute, 15 * time.Minute, 7*time.Minute + 30*time.Second}, // at most half the ttl
		{time.Minute, time.Hour, 5 * time.Minute},
	}
	for _, tt := range tests {
		if got := config.AWSMargin(tt.fixed, tt.ttl); got != tt.want {
			t.Errorf("AWSMargin(%v, %v) = %v, want %v", tt.fixed, tt.ttl, got, tt.want)
		}
	}
}

// Plain http is accepted only to a loopback address, where a local broker listens.
func TestBrokerURLLoopbackMayBeHTTP(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:8080", "http://127.9.9.9/", "http://[::1]:80/x", "http://LocalHost:1", "https://broker.example.com"} {
		env := baseEnv()
		env[config.EnvBrokerURL] = u
		if _, err := parse(env); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	for host, want := range map[string]bool{"127.0.0.1": true, "127.1.2.3": true, "::1": true, "localhost": true,
		"::ffff:127.0.0.1": true, "128.0.0.1": false, "10.0.0.1": false, "localhost.example.com": false, "": false, "fe80::1": false} {
		if got := config.IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v", host, got)
		}
	}
}
