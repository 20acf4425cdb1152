package attest

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"short", "short"},
		{strings.Repeat("a", 64), strings.Repeat("a", 64)},
		{strings.Repeat("a", 65), strings.Repeat("a", 61) + "…"},
		{strings.Repeat("a", 64000), strings.Repeat("a", 61) + "…"},
		// a 2-byte rune straddling byte 61 is dropped whole
		{strings.Repeat("a", 60) + strings.Repeat("é", 10), strings.Repeat("a", 60) + "…"},
		{strings.Repeat("€", 30), strings.Repeat("€", 20) + "…"},
		{"bad\xffbyte", "bad?byte"},
	} {
		got := clip(tc.in)
		if got != tc.want || len(got) > MaxCallerText || !utf8.ValidString(got) {
			t.Errorf("clip(%.20q…) = %q (%d bytes), want %q", tc.in, got, len(got), tc.want)
		}
	}
}

func FuzzClip(f *testing.F) {
	f.Add("x")
	f.Add(strings.Repeat("€", 30))
	f.Fuzz(func(t *testing.T, s string) {
		got := clip(s)
		if len(got) > MaxCallerText || !utf8.ValidString(got) {
			t.Fatalf("clip(%q) = %q", s, got)
		}
		if len(s) <= MaxCallerText && utf8.ValidString(s) && got != s {
			t.Fatalf("clip changed short valid text %q to %q", s, got)
		}
	})
}
