package trace

import (
	"strings"
	"testing"
)

func TestSanitizeSQL(t *testing.T) {
	long := "SELECT " + strings.Repeat("col, ", 1000) + "1"
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"  SELECT $1::int + $2 FROM t\n", "SELECT $1::int + $2 FROM t"},
		{"SELECT * FROM t WHERE name = 'bob'", "SELECT * FROM t WHERE name = [redacted]"},
		{"SELECT E'\\x41'", "SELECT E [redacted]"},
		{"SELECT $$dollar secret$$", "SELECT [redacted]"},
		{"SELECT $tag$dollar secret$tag$, $1", "SELECT [redacted]"},
		{"SELECT a$b FROM t", "SELECT a [redacted]"},
		{"'only a literal'", redacted},
		{"CREATE ROLE x LOGIN PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a2V5:c2Vydg=='", "CREATE ROLE [redacted]"},
		{"create user \"Odd Name\" password 'p'", "create user [redacted]"},
		{"ALTER ROLE x WITH PASSWORD $v$SCRAM-SHA-256$4096:x$y:z$v$", "ALTER ROLE [redacted]"},
		{"ALTER ROLE x PASSWORD NULL", "ALTER ROLE [redacted]"},
		{"UPDATE t SET PassWord_hash = $1", "UPDATE t [redacted]"},
		{"/* c */ CREATE ROLE x PASSWORD 'p'", redacted},
		{"CREATE ROLE x_1 PASSWORD 'p'", "CREATE ROLE [redacted]"},
		{"DROP ROLE x", "DROP ROLE x"},
		{long, long[:maxQueryLen] + "…"},
	} {
		if got := sanitizeSQL(tc.in); got != tc.want {
			t.Errorf("sanitizeSQL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
