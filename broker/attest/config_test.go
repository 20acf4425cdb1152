package attest_test

import (
	"strings"
	"testing"

	"github.com/ephemera-sh/ephemera/broker/attest"
)

func TestNewVerifierConfig(t *testing.T) {
	ok := func() attest.Config {
		return attest.Config{Audience: testAudience, Region: testRegion, Nonces: newMemNonces()}
	}
	for _, tc := range []struct {
		name  string
		tweak func(*attest.Config)
		want  string // "" means valid
	}{
		{"defaults", func(*attest.Config) {}, ""},
		{"http endpoint", func(c *attest.Config) { c.Endpoint = "http://127.0.0.1:4566" }, ""},
		{"https endpoint with slash", func(c *attest.Config) { c.Endpoint = "https://sts.us-east-1.amazonaws.com/" }, ""},
		{"hosts without region", func(c *attest.Config) { c.Region = ""; c.AllowedHosts = []string{"sts.amazonaws.com"} }, ""},
		{"missing audience", func(c *attest.Config) { c.Audience = "" }, "Audience"},
		{"missing region", func(c *attest.Config) { c.Region = "" }, "Region"},
		{"missing nonces", func(c *attest.Config) { c.Nonces = nil }, "Nonces"},
		{"endpoint ftp", func(c *attest.Config) { c.Endpoint = "ftp://sts.example" }, "endpoint"},
		{"endpoint without scheme", func(c *attest.Config) { c.Endpoint = "sts.us-east-1.amazonaws.com" }, "endpoint"},
		{"endpoint without host", func(c *attest.Config) { c.Endpoint = "https:///" }, "endpoint"},
		{"endpoint with query", func(c *attest.Config) { c.Endpoint = "https://sts.example/?a=b" }, "endpoint"},
		{"endpoint with user info", func(c *attest.Config) { c.Endpoint = "https://u:p@sts.example/" }, "endpoint"},
		{"endpoint unparsable", func(c *attest.Config) { c.Endpoint = "https://sts example/%zz" }, "endpoint"},
		{"host with port", func(c *attest.Config) { c.AllowedHosts = []string{"sts.amazonaws.com:443"} }, "host"},
		{"host with path", func(c *attest.Config) { c.AllowedHosts = []string{"sts.amazonaws.com/x"} }, "host"},
		{"host as URL", func(c *attest.Config) { c.AllowedHosts = []string{"https://sts.amazonaws.com"} }, "host"},
		{"host with user", func(c *attest.Config) { c.AllowedHosts = []string{"u@sts.amazonaws.com"} }, "host"},
		{"empty host", func(c *attest.Config) { c.AllowedHosts = []string{"sts.amazonaws.com", "  "} }, "host"},
		{"host with inner space", func(c *attest.Config) { c.AllowedHosts = []string{"sts amazonaws.com"} }, "host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok()
			tc.tweak(&cfg)
			v, err := attest.NewVerifier(cfg)
			if tc.want == "" {
				if err != nil || v == nil {
					t.Fatalf("NewVerifier: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("NewVerifier accepted %+v", cfg)
			}
			if v != nil {
				t.Errorf("NewVerifier returned a verifier with an error")
			}
			if !strings.HasPrefix(err.Error(), "attest: config: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q should start with \"attest: config: \" and mention %q", err, tc.want)
			}
		})
	}
}

func TestNewVerifierDefaults(t *testing.T) {
	v, err := attest.NewVerifier(attest.Config{Audience: testAudience, Region: testRegion, Nonces: newMemNonces()})
	if err != nil {
		t.Fatal(err)
	}
	if v.MaxAge() != attest.DefaultMaxAge {
		t.Errorf("MaxAge = %v, want %v", v.MaxAge(), attest.DefaultMaxAge)
	}
	v, err = attest.NewVerifier(attest.Config{Audience: testAudience, Region: testRegion, Nonces: newMemNonces(), MaxAge: -1})
	if err != nil {
		t.Fatal(err)
	}
	if v.MaxAge() != attest.DefaultMaxAge {
		t.Errorf("negative MaxAge gave %v, want the default %v", v.MaxAge(), attest.DefaultMaxAge)
	}
}
