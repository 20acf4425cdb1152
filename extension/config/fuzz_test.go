package config_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/extension/config"
)

func FuzzParseCredentials(f *testing.F) {
	for _, s := range []string{
		"orders=orders/readonly:15m",
		"a=db/r,b=db/w:1h",
		" a = db/r , b=db/w:90s ",
		"a=db/r,a=db/r",
		"=/:", ",", "a=b/c:-1s", "a=b/c:1e9h", "a=b/c:0.5s", "ä=b/c",
	} {
		f.Add(s)
	}
	nameRE := regexp.MustCompile(`^[a-z0-9_-]+$`)
	f.Fuzz(func(t *testing.T, s string) {
		creds, err := config.ParseCredentials(s)
		if err != nil {
			if creds != nil {
				t.Fatalf("credentials %+v with error %v", creds, err)
			}
			return
		}
		if len(creds) == 0 {
			t.Fatalf("no credentials and no error for %q", s)
		}
		seen := map[string]bool{}
		var parts []string
		for _, c := range creds {
			if !nameRE.MatchString(c.Name) || c.Database == "" || c.Role == "" {
				t.Fatalf("bad credential %+v from %q", c, s)
			}
			if seen[c.Name] {
				t.Fatalf("duplicate name %q from %q", c.Name, s)
			}
			seen[c.Name] = true
			if c.TTL < 0 || c.TTL%time.Second != 0 || (c.TTL != 0 && c.TTL < time.Second) {
				t.Fatalf("bad ttl %v from %q", c.TTL, s)
			}
			p := c.Name + "=" + c.Database + "/" + c.Role
			if c.TTL > 0 {
				p += ":" + c.TTL.String()
			}
			parts = append(parts, p)
		}
		// What parses re-parses to the same thing from its canonical form.
		again, err := config.ParseCredentials(strings.Join(parts, ","))
		if err != nil || len(again) != len(creds) {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		for i := range creds {
			if again[i] != creds[i] {
				t.Fatalf("round trip of %q: %+v != %+v", s, again[i], creds[i])
			}
		}
	})
}

func FuzzParseAWSProfiles(f *testing.F) {
	for _, s := range []string{
		"reports=reports-read:30m", "a=p,b=q:12h", " a = p , b=q:900s ", "a=p,a=p", "=:", "a=p:14m", "a=p:15m0.1s",
	} {
		f.Add(s)
	}
	nameRE := regexp.MustCompile(`^[a-z0-9_-]+$`)
	f.Fuzz(func(t *testing.T, s string) {
		profiles, err := config.ParseAWSProfiles(s)
		if err != nil {
			if profiles != nil {
				t.Fatalf("profiles %+v with error %v", profiles, err)
			}
			return
		}
		seen := map[string]bool{}
		var parts []string
		for _, p := range profiles {
			if !nameRE.MatchString(p.Name) || p.Profile == "" || seen[p.Name] {
				t.Fatalf("bad profile %+v from %q", p, s)
			}
			seen[p.Name] = true
			if p.TTL != 0 && (p.TTL < config.MinAWSTTL || p.TTL > config.MaxAWSTTL || p.TTL%time.Second != 0) {
				t.Fatalf("bad ttl %v from %q", p.TTL, s)
			}
			e := p.Name + "=" + p.Profile
			if p.TTL > 0 {
				e += ":" + p.TTL.String()
			}
			parts = append(parts, e)
		}
		again, err := config.ParseAWSProfiles(strings.Join(parts, ","))
		if err != nil || len(again) != len(profiles) {
			t.Fatalf("round trip of %q: %+v, %v", s, again, err)
		}
		for i := range profiles {
			if again[i] != profiles[i] {
				t.Fatalf("round trip of %q: %+v != %+v", s, again[i], profiles[i])
			}
		}
	})
}
