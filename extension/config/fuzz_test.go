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
