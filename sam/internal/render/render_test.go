package render

import (
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	env := map[string]string{
		"EPHEMERA_A":   "a.example.com",
		"EPHEMERA_B":   "arn:aws:iam::123456789012:role/x+y=z,w@v-u",
		"EPHEMERA_BAD": `x"y`,
		"EPHEMERA_NL":  "x\ny",
		"EPHEMERA_E":   "",
		"AWS_SECRET":   "s",
	}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, c := range []struct{ in, want, err string }{
		{"h: ${EPHEMERA_A} ${EPHEMERA_A}", "h: a.example.com a.example.com", ""},
		{`"${EPHEMERA_B}"`, `"arn:aws:iam::123456789012:role/x+y=z,w@v-u"`, ""},
		{"cost: $5 and $HOME", "cost: $5 and $HOME", ""},
		{"${EPHEMERA_MISSING}", "", "EPHEMERA_MISSING is not set"},
		{"${EPHEMERA_E}", "", "EPHEMERA_E is not set"},
		{"${EPHEMERA_BAD}", "", "characters outside"},
		{"${EPHEMERA_NL}", "", "characters outside"},
		{"${AWS_SECRET}", "", "not a placeholder"},
		{"${ EPHEMERA_A }", "", "not a placeholder"},
		{"${EPHEMERA_A", "", "unterminated"},
	} {
		got, err := Expand(c.in, getenv)
		if c.err == "" {
			if err != nil || got != c.want {
				t.Errorf("Expand(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Expand(%q): error %v, want one containing %q", c.in, err, c.err)
		}
		if err != nil && (strings.Contains(err.Error(), `x"y`) || strings.Contains(err.Error(), "x\ny")) {
			t.Errorf("Expand(%q): the error repeats the value: %v", c.in, err)
		}
	}
}
