package pgrole

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var usernameRE = regexp.MustCompile(`^eph_[a-z0-9_]*_[a-z2-7]{12}$`)

func TestNewUsername(t *testing.T) {
	tests := []struct {
		role     string
		wantRole string // the role part between "eph_" and "_<random>"
	}{
		{"readonly", "readonly"},
		{"Read-Only", "read_only"},
		{"ünïcode", "__n__code"},
		{`a"; DROP ROLE x; --`, "a___drop_role_x____"},
		{"", ""},
		{"ro_2", "ro_2"},
		{"K\u212a", "k___"}, // KELVIN SIGN is not lowercased to 'k'
		{strings.Repeat("x", 100), strings.Repeat("x", 46)},
		{strings.Repeat("A", 46) + "B", strings.Repeat("a", 46)},
		{"{{name}}", "__name__"},
	}
	for _, tt := range tests {
		got, err := NewUsername(tt.role)
		if err != nil {
			t.Fatalf("NewUsername(%q): %v", tt.role, err)
		}
		wantPrefix := Prefix + tt.wantRole + "_"
		if !strings.HasPrefix(got, wantPrefix) {
			t.Errorf("NewUsername(%q) = %q, want prefix %q", tt.role, got, wantPrefix)
		}
		if len(got) != len(wantPrefix)+12 {
			t.Errorf("NewUsername(%q) = %q, len %d, want %d", tt.role, got, len(got), len(wantPrefix)+12)
		}
		if len(got) > 63 {
			t.Errorf("NewUsername(%q) = %q is %d bytes, over 63", tt.role, got, len(got))
		}
		if !usernameRE.MatchString(got) {
			t.Errorf("NewUsername(%q) = %q does not match %s", tt.role, got, usernameRE)
		}
		if !ValidUsername(got) {
			t.Errorf("ValidUsername(NewUsername(%q) = %q) = false", tt.role, got)
		}
	}
}

func TestNewUsernameUnique(t *testing.T) {
	const n = 10000
	seen := make(map[string]bool, n)
	for range n {
		u, err := NewUsername("app")
		if err != nil {
			t.Fatal(err)
		}
		if seen[u] {
			t.Fatalf("duplicate username %q", u)
		}
		seen[u] = true
	}
}

func TestValidUsername(t *testing.T) {
	tests := []struct {
		s    string
		want bool
	}{
		{"eph_ro_abcdefghijkl", true},
		{"eph_read_only_234567abcdef", true},
		{"eph__abcdefghijkl", true},                                 // empty role part
		{"eph_" + strings.Repeat("x", 46) + "_abcdefghijkl", true},  // 63 bytes
		{"eph_" + strings.Repeat("x", 47) + "_abcdefghijkl", false}, // 64 bytes
		{"postgres", false},
		{"eph_", false},
		{"", false},
		{"eph_abcdefghijkl", false},    // no separator before random part
		{"eph_ro_abcdefghijk", false},  // 11 random chars
		{"eph_ro-abcdefghijkl", false}, // '-' instead of '_'
		{"EPH_ro_abcdefghijkl", false},
		{"eph_RO_abcdefghijkl", false},
		{"eph_ro_ABCDEFGHIJKL", false},
		{"eph_ro_abcdefghij18", false}, // 1 and 8 are not base32
		{`eph_ro"_abcdefghijkl`, false},
		{`"eph_ro_abcdefghijkl"`, false},
		{"eph_ro'_abcdefghijkl", false},
		{"eph_ro_abcdefghijkl ", false},
		{"eph_r\x00_abcdefghijkl", false},
		{"eph_ü_abcdefghijkl", false},
		{"xph_ro_abcdefghijkl", false},
	}
	for _, tt := range tests {
		if got := ValidUsername(tt.s); got != tt.want {
			t.Errorf("ValidUsername(%q) = %v, want %v", tt.s, got, tt.want)
		}
	}
}

func TestNewPassword(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)
	seen := make(map[string]bool)
	for range 1000 {
		p, err := NewPassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 43 {
			t.Fatalf("len(NewPassword()) = %d, want 43", len(p))
		}
		if !re.MatchString(p) {
			t.Fatalf("NewPassword() = %q is not unpadded base64url", p)
		}
		raw, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil || len(raw) != 32 {
			t.Fatalf("NewPassword() = %q decodes to %d bytes, err %v; want 32 bytes", p, len(raw), err)
		}
		if seen[p] {
			t.Fatalf("duplicate password %q", p)
		}
		seen[p] = true
		if _, err := SCRAMVerifier(p, 1); err != nil {
			t.Fatalf("SCRAMVerifier(NewPassword()): %v", err)
		}
	}
}

var verifierRE = regexp.MustCompile(`^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$`)

// pbkdf2Block1 is PBKDF2-HMAC-SHA-256 for a 32-byte key (one block),
// written out from RFC 8018 independently of crypto/pbkdf2.
func pbkdf2Block1(password, salt []byte, iter int) []byte {
	mac := hmac.New(sha256.New, password)
	mac.Write(salt)
	mac.Write([]byte{0, 0, 0, 1})
	u := mac.Sum(nil)
	out := bytes.Clone(u)
	for range iter - 1 {
		mac.Reset()
		mac.Write(u)
		u = mac.Sum(u[:0])
		for j := range out {
			out[j] ^= u[j]
		}
	}
	return out
}

func testHMAC(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("decoding %q: %v", s, err)
	}
	return b
}

// parseVerifier splits a verifier into iterations, salt, StoredKey and
// ServerKey.
func parseVerifier(t *testing.T, v string) (iter string, salt, stored, server []byte) {
	t.Helper()
	m := regexp.MustCompile(`^SCRAM-SHA-256\$([0-9]+):([^$]+)\$([^:]+):(.+)$`).FindStringSubmatch(v)
	if m == nil {
		t.Fatalf("malformed verifier %q", v)
	}
	return m[1], mustB64(t, m[2]), mustB64(t, m[3]), mustB64(t, m[4])
}

// TestSCRAMVerifierRFC7677 checks the verifier for the RFC 7677 section 3
// example (user "user", password "pencil") twice: against keys derived here
// from first principles, and against the ClientProof and ServerSignature of
// the RFC's exchange.
func TestSCRAMVerifierRFC7677(t *testing.T) {
	const (
		saltB64         = "W22ZaJ0SNY7soEsUEjb6gQ=="
		clientFirstBare = "n=user,r=rOprNGfwEbeRWgbNEkqO"
		serverFirst     = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
		clientFinalBare = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
		clientProofB64  = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
		serverSigB64    = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
		// The verifier PostgreSQL would store for this password and salt
		// (pinned after the two independent checks below).
		wantVerifier = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
	)
	salt := mustB64(t, saltB64)
	got, err := scramVerifierWithSalt("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if !verifierRE.MatchString(got) {
		t.Fatalf("verifier %q does not match %s", got, verifierRE)
	}

	// First principles.
	salted := pbkdf2Block1([]byte("pencil"), salt, 4096)
	clientKey := testHMAC(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := testHMAC(salted, "Server Key")
	want := "SCRAM-SHA-256$4096:" + saltB64 + "$" +
		base64.StdEncoding.EncodeToString(storedKey[:]) + ":" +
		base64.StdEncoding.EncodeToString(serverKey)
	if got != want {
		t.Fatalf("verifier\n got %s\nwant %s (first principles)", got, want)
	}

	// The RFC's exchange: the server holding this verifier must produce
	// the RFC's ServerSignature and accept the RFC's ClientProof.
	iter, gotSalt, gotStored, gotServer := parseVerifier(t, got)
	if iter != "4096" || !bytes.Equal(gotSalt, salt) {
		t.Fatalf("verifier %q: iterations %s salt %x", got, iter, gotSalt)
	}
	authMessage := clientFirstBare + "," + serverFirst + "," + clientFinalBare
	if sig := base64.StdEncoding.EncodeToString(testHMAC(gotServer, authMessage)); sig != serverSigB64 {
		t.Errorf("ServerSignature = %s, want %s (RFC 7677)", sig, serverSigB64)
	}
	clientSig := testHMAC(gotStored, authMessage)
	proof := mustB64(t, clientProofB64)
	recovered := make([]byte, len(proof))
	for i := range proof {
		recovered[i] = proof[i] ^ clientSig[i]
	}
	if h := sha256.Sum256(recovered); !bytes.Equal(h[:], gotStored) {
		t.Errorf("RFC 7677 ClientProof does not verify against StoredKey %x", gotStored)
	}

	if got != wantVerifier {
		t.Errorf("verifier\n got %s\nwant %s (pinned)", got, wantVerifier)
	}
}

func TestSCRAMVerifierRandomSalt(t *testing.T) {
	const password = "correct horse battery staple"
	a, err := SCRAMVerifier(password, DefaultSCRAMIterations)
	if err != nil {
		t.Fatal(err)
	}
	b, err := SCRAMVerifier(password, DefaultSCRAMIterations)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{a, b} {
		if !verifierRE.MatchString(v) {
			t.Errorf("verifier %q does not match %s", v, verifierRE)
		}
		if strings.Contains(v, password) {
			t.Errorf("verifier %q contains the password", v)
		}
		_, salt, _, _ := parseVerifier(t, v)
		if len(salt) != 16 {
			t.Errorf("salt is %d bytes, want 16", len(salt))
		}
		again, err := scramVerifierWithSalt(password, salt, DefaultSCRAMIterations)
		if err != nil || again != v {
			t.Errorf("recomputing with the same salt gave %q, %v; want %q", again, err, v)
		}
	}
	if a == b {
		t.Errorf("two verifiers share a salt: %q", a)
	}
	if v, err := SCRAMVerifier("pw", 1); err != nil || !strings.HasPrefix(v, "SCRAM-SHA-256$1:") {
		t.Errorf("SCRAMVerifier(pw, 1) = %q, %v", v, err)
	}
}

func TestSCRAMVerifierErrors(t *testing.T) {
	tests := []struct {
		password   string
		iterations int
		wantErr    string
	}{
		{"", 4096, "pgrole: SCRAM password is empty"},
		{"pässwörd-sëcret", 4096, "SCRAM password must be printable ASCII"},
		{"tab\tsecret", 4096, "SCRAM password must be printable ASCII"},
		{"newline\nsecret", 4096, "SCRAM password must be printable ASCII"},
		{"del\x7fsecret", 4096, "SCRAM password must be printable ASCII"},
		{"nul\x00secret", 4096, "SCRAM password must be printable ASCII"},
		{"hunter2-secret", 0, "SCRAM iteration count 0 out of range [1, 2147483647]"},
		{"hunter2-secret", -5, "SCRAM iteration count -5 out of range"},
		{"hunter2-secret", math.MaxInt32 + 1, "SCRAM iteration count 2147483648 out of range"},
	}
	for _, tt := range tests {
		for name, f := range map[string]func() (string, error){
			"SCRAMVerifier":         func() (string, error) { return SCRAMVerifier(tt.password, tt.iterations) },
			"scramVerifierWithSalt": func() (string, error) { return scramVerifierWithSalt(tt.password, []byte("salt"), tt.iterations) },
		} {
			v, err := f()
			if err == nil {
				t.Errorf("%s(%q, %d) = %q, want error", name, tt.password, tt.iterations, v)
				continue
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s(%q, %d) error %q, want it to contain %q", name, tt.password, tt.iterations, err, tt.wantErr)
			}
			if tt.password != "" && strings.Contains(err.Error(), tt.password) {
				t.Errorf("%s error %q contains the password", name, err)
			}
			for _, part := range []string{"secret", "pässwörd", "hunter2"} {
				if strings.Contains(err.Error(), part) {
					t.Errorf("%s error %q contains part of the password", name, err)
				}
			}
		}
	}
	if _, err := scramVerifierWithSalt("pencil", nil, 4096); err == nil || !strings.Contains(err.Error(), "empty SCRAM salt") {
		t.Errorf("scramVerifierWithSalt with no salt: err %v, want empty SCRAM salt", err)
	}
}

func TestQuoteIdentifier(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"eph_ro_abcdefghijkl", `"eph_ro_abcdefghijkl"`, ""},
		{"Mixed Case", `"Mixed Case"`, ""},
		{`a"b`, `"a""b"`, ""},
		{`"`, `""""`, ""},
		{`""`, `""""""`, ""},
		{`x"; DROP ROLE postgres; --`, `"x""; DROP ROLE postgres; --"`, ""},
		{`back\slash`, `"back\slash"`, ""},
		{`trailing\`, `"trailing\"`, ""},
		{"it's", `"it's"`, ""},
		{"ünïcode", `"ünïcode"`, ""},
		{"{{name}}", `"{{name}}"`, ""},
		{strings.Repeat("x", 64), `"` + strings.Repeat("x", 64) + `"`, ""},
		{"", "", "pgrole: identifier is empty"},
		{"a\x00b", "", "pgrole: identifier contains NUL byte at offset 1"},
	}
	for _, tt := range tests {
		got, err := QuoteIdentifier(tt.in)
		checkResult(t, "QuoteIdentifier", tt.in, got, err, tt.want, tt.wantErr)
	}
}

func TestQuoteLiteral(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"", `''`, ""},
		{"abc", `'abc'`, ""},
		{"it's", `'it''s'`, ""},
		{"'", `''''`, ""},
		{"''", `''''''`, ""},
		{`back\slash`, `'back\slash'`, ""},
		{`\`, `'\'`, ""},
		{`\'`, `'\'''`, ""},
		{`x\'; DROP ROLE postgres; --`, `'x\''; DROP ROLE postgres; --'`, ""},
		{`"double"`, `'"double"'`, ""},
		{"{{password}}", `'{{password}}'`, ""},
		{"line\nbreak", "'line\nbreak'", ""},
		{"ünï", "'ünï'", ""},
		{"a\x00b", "", "pgrole: literal contains NUL byte at offset 1"},
		{"\x00", "", "pgrole: literal contains NUL byte at offset 0"},
	}
	for _, tt := range tests {
		got, err := QuoteLiteral(tt.in)
		checkResult(t, "QuoteLiteral", tt.in, got, err, tt.want, tt.wantErr)
	}
}

func TestGrantMembership(t *testing.T) {
	long := strings.Repeat("g", 64)
	tests := []struct {
		group, name, want, wantErr string
	}{
		{"readers", "eph_ro_abcdefghijkl", `GRANT "readers" TO "eph_ro_abcdefghijkl"`, ""},
		{"Read Only", "eph_ro_abcdefghijkl", `GRANT "Read Only" TO "eph_ro_abcdefghijkl"`, ""},
		{`x"; DROP ROLE postgres; --`, "eph_ro_abcdefghijkl", `GRANT "x""; DROP ROLE postgres; --" TO "eph_ro_abcdefghijkl"`, ""},
		{strings.Repeat("g", 63), "m", `GRANT "` + strings.Repeat("g", 63) + `" TO "m"`, ""},
		{"", "eph_ro_abcdefghijkl", "", "pgrole: group name is empty"},
		{"readers", "", "", "pgrole: member name is empty"},
		{"read\x00ers", "m", "", "pgrole: group name contains NUL byte at offset 4"},
		{"readers", "m\x00", "", "pgrole: member name contains NUL byte at offset 1"},
		{long, "m", "", "pgrole: group name is 64 bytes, longer than PostgreSQL's 63-byte identifier limit"},
		{"readers", long, "", "pgrole: member name is 64 bytes"},
	}
	for _, tt := range tests {
		got, err := GrantMembership(tt.group, tt.name)
		checkResult(t, "GrantMembership", tt.group+","+tt.name, got, err, tt.want, tt.wantErr)
	}
}

func checkResult(t *testing.T, fn, in, got string, err error, want, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("%s(%q): unexpected error %v", fn, in, err)
	case wantErr == "" && got != want:
		t.Errorf("%s(%q) = %s, want %s", fn, in, got, want)
	case wantErr != "" && err == nil:
		t.Errorf("%s(%q) = %s, want error containing %q", fn, in, got, wantErr)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("%s(%q) error %q, want it to contain %q", fn, in, err, wantErr)
	}
}

const (
	testName     = "eph_ro_abcdefghijkl"
	testVerifier = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$c3RvcmVk:c2VydmVy"
)

var testValues = Values{
	Name:       testName,
	Password:   testVerifier,
	Expiration: time.Date(2030, 1, 2, 3, 4, 5, 500_000_000, time.UTC),
}

func TestRender(t *testing.T) {
	tests := []struct {
		tmpl string
		want string
	}{
		{
			DefaultCreation.String(),
			`CREATE ROLE "eph_ro_abcdefghijkl" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD 'SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$c3RvcmVk:c2VydmVy' VALID UNTIL '2030-01-02 03:04:05.5+00'`,
		},
		{
			DefaultRenewal.String(),
			`ALTER ROLE "eph_ro_abcdefghijkl" VALID UNTIL '2030-01-02 03:04:05.5+00'`,
		},
		{
			"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}",
			`GRANT SELECT ON ALL TABLES IN SCHEMA public TO "eph_ro_abcdefghijkl"`,
		},
		{
			"{{name}}",
			`"eph_ro_abcdefghijkl"`,
		},
		{
			"ALTER ROLE {{name}} SET search_path = \"$user\", public",
			`ALTER ROLE "eph_ro_abcdefghijkl" SET search_path = "$user", public`,
		},
		{
			// Semicolons inside quotes and comments are not statement ends.
			"SELECT ';', \";\", $$;$$, $q$ ; $$ ; $q$, E'\\';', U&'\\0041;' -- ; '\n, {{name}} /* ; /* ; */ ; */",
			"SELECT ';', \";\", $$;$$, $q$ ; $$ ; $q$, E'\\';', U&'\\0041;' -- ; '\n, \"eph_ro_abcdefghijkl\" /* ; /* ; */ ; */",
		},
		{
			// a$b$ is an identifier, not a dollar quote; $1 is a parameter.
			"SELECT a$b$, $1, x$$ WHERE {{name}} IS NOT NULL",
			`SELECT a$b$, $1, x$$ WHERE "eph_ro_abcdefghijkl" IS NOT NULL`,
		},
		{
			"COMMENT ON ROLE {{name}} IS 'single { and } and }} are fine'",
			`COMMENT ON ROLE "eph_ro_abcdefghijkl" IS 'single { and } and }} are fine'`,
		},
		{
			"ALTER ROLE {{name}} VALID UNTIL {{expiration}} -- renew\n",
			"ALTER ROLE \"eph_ro_abcdefghijkl\" VALID UNTIL '2030-01-02 03:04:05.5+00' -- renew\n",
		},
		{
			"ALTER ROLE {{name}} PASSWORD {{password}}}",
			`ALTER ROLE "eph_ro_abcdefghijkl" PASSWORD 'SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$c3RvcmVk:c2VydmVy'}`,
		},
		{
			"SELECT ({{name}}),{{password}}::text,-{{expiration}}",
			`SELECT ("eph_ro_abcdefghijkl"),'SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$c3RvcmVk:c2VydmVy'::text,-'2030-01-02 03:04:05.5+00'`,
		},
		{
			"select 1",
			"select 1",
		},
	}
	for _, tt := range tests {
		tmpl, err := ParseTemplate(tt.tmpl)
		if err != nil {
			t.Errorf("ParseTemplate(%q): %v", tt.tmpl, err)
			continue
		}
		if tmpl.String() != tt.tmpl {
			t.Errorf("String() = %q, want %q", tmpl.String(), tt.tmpl)
		}
		got, err := tmpl.Render(testValues)
		if err != nil {
			t.Errorf("Render(%q): %v", tt.tmpl, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Render(%q)\n got %s\nwant %s", tt.tmpl, got, tt.want)
		}
		if _, err := lex(got, false); err != nil {
			t.Errorf("rendered %q is not one well-formed statement: %v", got, err)
		}
	}
}

// TestRenderHostileValues checks that values are quoted, not interpreted:
// quotes cannot break out, and placeholder text inside values is never
// expanded.
func TestRenderHostileValues(t *testing.T) {
	tmpl := MustParseTemplate("ALTER ROLE {{name}} PASSWORD {{password}} VALID UNTIL {{expiration}}")
	tests := []struct {
		v    Values
		want string
	}{
		{
			Values{Name: testName, Password: `x'; DROP ROLE postgres; -- {{name}}`, Expiration: testValues.Expiration},
			`ALTER ROLE "eph_ro_abcdefghijkl" PASSWORD 'x''; DROP ROLE postgres; -- {{name}}' VALID UNTIL '2030-01-02 03:04:05.5+00'`,
		},
		{
			Values{Name: `a"; DROP ROLE postgres; --{{password}}`, Password: `{{expiration}}\'`, Expiration: testValues.Expiration},
			`ALTER ROLE "a""; DROP ROLE postgres; --{{password}}" PASSWORD '{{expiration}}\''' VALID UNTIL '2030-01-02 03:04:05.5+00'`,
		},
		{
			Values{Name: "{{name}}", Password: "{{password}}", Expiration: testValues.Expiration},
			`ALTER ROLE "{{name}}" PASSWORD '{{password}}' VALID UNTIL '2030-01-02 03:04:05.5+00'`,
		},
	}
	for _, tt := range tests {
		got, err := tmpl.Render(tt.v)
		if err != nil {
			t.Errorf("Render(%+v): %v", tt.v, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Render\n got %s\nwant %s", got, tt.want)
		}
		if _, err := lex(got, false); err != nil {
			t.Errorf("rendered %q is not one well-formed statement: %v", got, err)
		}
	}
}

func TestRenderExpiration(t *testing.T) {
	tmpl := MustParseTemplate("ALTER ROLE {{name}} VALID UNTIL {{expiration}}")
	plus5 := time.FixedZone("UTC+5", 5*3600)
	tests := []struct {
		at   time.Time
		want string
	}{
		{time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), "'2030-01-02 03:04:05+00'"},
		{time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.UTC), "'2030-01-02 03:04:05.123456+00'"},
		{time.Date(2030, 1, 2, 3, 4, 5, 1000, time.UTC), "'2030-01-02 03:04:05.000001+00'"},
		{time.Date(2030, 1, 2, 3, 4, 5, 999, time.UTC), "'2030-01-02 03:04:05+00'"},
		{time.Date(2030, 1, 1, 2, 0, 0, 0, plus5), "'2029-12-31 21:00:00+00'"},
		{time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), "'0001-01-01 00:00:00+00'"},
		{time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), "'9999-12-31 23:59:59+00'"},
	}
	for _, tt := range tests {
		got, err := tmpl.Render(Values{Name: testName, Expiration: tt.at})
		if err != nil {
			t.Errorf("Render(%v): %v", tt.at, err)
			continue
		}
		if want := `ALTER ROLE "eph_ro_abcdefghijkl" VALID UNTIL ` + tt.want; got != want {
			t.Errorf("Render(%v)\n got %s\nwant %s", tt.at, got, want)
		}
	}
}

func TestRenderErrors(t *testing.T) {
	const secret = "SCRAM-SHA-256$secret"
	tests := []struct {
		tmpl    Template
		v       Values
		wantErr string
	}{
		{DefaultCreation, Values{Password: secret, Expiration: testValues.Expiration}, "pgrole: {{name}} value is empty"},
		{DefaultCreation, Values{Name: testName, Expiration: testValues.Expiration}, "pgrole: {{password}} value is empty"},
		{DefaultCreation, Values{Name: testName, Password: secret}, "pgrole: {{expiration}} value is the zero time"},
		{DefaultRenewal, Values{Name: testName}, "pgrole: {{expiration}} value is the zero time"},
		{DefaultRenewal, Values{Name: strings.Repeat("n", 64), Expiration: testValues.Expiration}, "pgrole: {{name}} value is 64 bytes, longer than PostgreSQL's 63-byte identifier limit"},
		{DefaultRenewal, Values{Name: "a\x00", Expiration: testValues.Expiration}, "pgrole: {{name}} value contains NUL byte at offset 1"},
		{DefaultCreation, Values{Name: testName, Password: secret + "\x00", Expiration: testValues.Expiration}, "pgrole: {{password}} value contains NUL byte at offset 20"},
		{DefaultRenewal, Values{Name: testName, Expiration: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, "pgrole: {{expiration}} value has year 10000, outside 1-9999"},
		{DefaultRenewal, Values{Name: testName, Expiration: time.Date(0, 12, 31, 0, 0, 0, 0, time.UTC)}, "pgrole: {{expiration}} value has year 0, outside 1-9999"},
		{Template{}, testValues, "pgrole: Render called on a zero Template"},
	}
	for _, tt := range tests {
		got, err := tt.tmpl.Render(tt.v)
		if err == nil {
			t.Errorf("Render(%q, %+v) = %q, want error %q", tt.tmpl, tt.v, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Render(%q) error %q, want it to contain %q", tt.tmpl, err, tt.wantErr)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Render error %q contains the password value", err)
		}
	}

	// Values for placeholders a template does not use are not required.
	got, err := DefaultRenewal.Render(Values{Name: testName, Expiration: testValues.Expiration})
	if err != nil || got != `ALTER ROLE "eph_ro_abcdefghijkl" VALID UNTIL '2030-01-02 03:04:05.5+00'` {
		t.Errorf("DefaultRenewal.Render without password = %q, %v", got, err)
	}
	got, err = MustParseTemplate("select 1").Render(Values{})
	if err != nil || got != "select 1" {
		t.Errorf("Render of a template without placeholders = %q, %v", got, err)
	}
}

func TestParseTemplateErrors(t *testing.T) {
	tests := []struct {
		tmpl    string
		wantErr string
	}{
		// Empty statements.
		{"", "pgrole: empty statement: nothing but whitespace or comments from offset 0 to 0"},
		{" \n\t\r\f\v", "pgrole: empty statement: nothing but whitespace or comments from offset 0 to 6"},
		{"-- just a comment", "pgrole: empty statement"},
		{"/* c */ -- d\n", "pgrole: empty statement"},

		// NUL bytes.
		{"SELECT 1\x00", "pgrole: NUL byte at offset 8"},
		{"SELECT '\x00'", "pgrole: NUL byte at offset 8"},

		// Unknown placeholders.
		{"CREATE ROLE {{username}}", `pgrole: unknown placeholder "{{username}}" at offset 12; known placeholders are {{name}}, {{password}} and {{expiration}}`},
		{"CREATE ROLE {{Name}}", `pgrole: unknown placeholder "{{Name}}" at offset 12`},
		{"CREATE ROLE {{ name }}", `pgrole: unknown placeholder "{{ name }}" at offset 12`},
		{"CREATE ROLE {{}}", `pgrole: unknown placeholder "{{}}" at offset 12`},
		{"CREATE ROLE {{{name}}", `pgrole: unknown placeholder "{{{name}}" at offset 12`},
		{"SELECT {{" + strings.Repeat("x", 100) + "}}", `pgrole: unknown placeholder "{{xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"... at offset 7`},

		// Unterminated placeholders.
		{"CREATE ROLE {{name", `pgrole: unterminated "{{" at offset 12`},
		{"CREATE ROLE {{name}", `pgrole: unterminated "{{" at offset 12`},
		{"CREATE ROLE {{name PASSWORD {{password}}", `pgrole: unterminated "{{" at offset 12`},
		{"SELECT 1 {{", `pgrole: unterminated "{{" at offset 9`},

		// Placeholders (or "{{") inside quotes and comments.
		{"ALTER ROLE {{name}} PASSWORD '{{password}}'", `pgrole: "{{password}}" at offset 30 is inside a quoted string starting at offset 29; placeholders are quoted for you, so write them without quotes`},
		{`ALTER ROLE "{{name}}" VALID UNTIL {{expiration}}`, `pgrole: "{{name}}" at offset 12 is inside a quoted identifier starting at offset 11`},
		{`ALTER ROLE {{name}} VALID UNTIL 'at {{expiration}} UTC'`, `pgrole: "{{expiration}}" at offset 36 is inside a quoted string starting at offset 32`},
		{`ALTER ROLE {{name}} PASSWORD E'\'{{password}}'`, `pgrole: "{{password}}" at offset 33 is inside an escape string (E'...') starting at offset 29`},
		{`ALTER ROLE {{name}} PASSWORD U&'{{password}}'`, `pgrole: "{{password}}" at offset 32 is inside a quoted string starting at offset 31`},
		{`ALTER ROLE {{name}} PASSWORD $$ {{password}} $$`, `pgrole: "{{password}}" at offset 32 is inside a dollar-quoted string starting at offset 29`},
		{`ALTER ROLE {{name}} PASSWORD $p$ {{password}} $p$`, `pgrole: "{{password}}" at offset 33 is inside a dollar-quoted string starting at offset 29`},
		{`SELECT '{{'`, `pgrole: "{{" at offset 8 is inside a quoted string starting at offset 7`},
		{"ALTER ROLE {{name}} -- {{password}}", `pgrole: "{{password}}" at offset 23 is inside a comment starting at offset 20; placeholders are not allowed in comments`},
		{"ALTER ROLE {{name}} /* /* */ {{password}} */", `pgrole: "{{password}}" at offset 29 is inside a comment starting at offset 20`},

		// More than one statement.
		{"ALTER ROLE {{name}} VALID UNTIL {{expiration}};", "pgrole: ';' at offset 46 outside quotes; a template must be exactly one statement, without a trailing ';'"},
		{"DROP ROLE {{name}}; DROP ROLE postgres", "pgrole: ';' at offset 18 outside quotes"},
		{"SELECT 'a''b'; SELECT 1", "pgrole: ';' at offset 13 outside quotes"},
		{`SELECT E'\\'; SELECT 1`, "pgrole: ';' at offset 12 outside quotes"},
		{"SELECT 1 /* x */; SELECT 2", "pgrole: ';' at offset 16 outside quotes"},
		{"SELECT 1 -- x\n; SELECT 2", "pgrole: ';' at offset 14 outside quotes"},
		{"SELECT $a$ $b$ $a$; SELECT 2", "pgrole: ';' at offset 18 outside quotes"},
		{";", "pgrole: ';' at offset 0 outside quotes"},

		// Unterminated quotes and comments.
		{"SELECT 'abc", "pgrole: unterminated quoted string starting at offset 7"},
		{"SELECT 'it''s", "pgrole: unterminated quoted string starting at offset 7"},
		{`SELECT "abc`, "pgrole: unterminated quoted identifier starting at offset 7"},
		{`SELECT E'abc\'`, "pgrole: unterminated escape string (E'...') starting at offset 7"},
		{"SELECT $a$ abc $b$", "pgrole: unterminated dollar-quoted string $a$ starting at offset 7"},
		{"SELECT /* abc", "pgrole: unterminated comment starting at offset 7"},
		{"SELECT /* /* */ 1", "pgrole: unterminated comment starting at offset 7"},

		// Placeholders glued to their neighbours.
		{"ALTER ROLE x{{name}}", `pgrole: placeholder {{name}} at offset 12 is directly preceded by "x"; separate it with a space`},
		{"ALTER ROLE {{name}}x", `pgrole: placeholder {{name}} at offset 11 is directly followed by "x"; separate it with a space`},
		{"ALTER ROLE {{name}} PASSWORD E{{password}}", `pgrole: placeholder {{password}} at offset 30 is directly preceded by "E"`},
		{"ALTER ROLE U&{{name}}", `pgrole: placeholder {{name}} at offset 13 is directly preceded by "&"`},
		{"ALTER ROLE {{name}}{{password}}", `pgrole: placeholder {{name}} at offset 11 is directly followed by "{"`},
		{"SELECT 'a'{{password}}", `pgrole: placeholder {{password}} at offset 10 is directly preceded by "'"`},
		{"SELECT {{password}}'a'", `pgrole: placeholder {{password}} at offset 7 is directly followed by "'"`},
		{`SELECT {{name}}"x"`, `pgrole: placeholder {{name}} at offset 7 is directly followed by "\""`},
		{"SELECT a${{name}}", `pgrole: placeholder {{name}} at offset 9 is directly preceded by "$"`},
		{"SELECT 1{{name}}", `pgrole: placeholder {{name}} at offset 8 is directly preceded by "1"`},
		{"SELECT é{{name}}", `pgrole: placeholder {{name}} at offset 9 is directly preceded by "\xa9"`},
	}
	for _, tt := range tests {
		tmpl, err := ParseTemplate(tt.tmpl)
		if err == nil {
			t.Errorf("ParseTemplate(%q) = %q, want error %q", tt.tmpl, tmpl.pieces, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParseTemplate(%q)\n error %s\n want it to contain %s", tt.tmpl, err, tt.wantErr)
		}
		if tmpl.String() != "" || tmpl.pieces != nil {
			t.Errorf("ParseTemplate(%q) returned a non-zero Template with an error", tt.tmpl)
		}
	}
}

func TestUses(t *testing.T) {
	tests := []struct {
		tmpl        Template
		placeholder string
		want        bool
	}{
		{DefaultCreation, "name", true},
		{DefaultCreation, "{{name}}", true},
		{DefaultCreation, "password", true},
		{DefaultCreation, "{{password}}", true},
		{DefaultCreation, "expiration", true},
		{DefaultRenewal, "name", true},
		{DefaultRenewal, "password", false},
		{DefaultRenewal, "{{password}}", false},
		{DefaultRenewal, "expiration", true},
		{DefaultCreation, "username", false},
		{DefaultCreation, "{{username}}", false},
		{DefaultCreation, "", false},
		{DefaultCreation, "{{}}", false},
		{DefaultCreation, "{{name", false},
		{MustParseTemplate("SELECT '{' -- }}"), "name", false},
		{Template{}, "name", false},
	}
	for _, tt := range tests {
		if got := tt.tmpl.Uses(tt.placeholder); got != tt.want {
			t.Errorf("%q.Uses(%q) = %v, want %v", tt.tmpl, tt.placeholder, got, tt.want)
		}
	}
}

func TestMustParseTemplatePanics(t *testing.T) {
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !strings.Contains(err.Error(), `unknown placeholder "{{username}}"`) {
			t.Errorf("MustParseTemplate panicked with %v, want an unknown placeholder error", r)
		}
	}()
	MustParseTemplate("CREATE ROLE {{username}}")
}

func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{
		DefaultCreation.String(),
		DefaultRenewal.String(),
		"GRANT x TO {{name}}",
		"ALTER ROLE {{name}} PASSWORD '{{password}}'",
		"SELECT $a$ {{x}} $a$, E'\\'', \"{{\", /* /* */ */ -- {{\n{{expiration}}",
		"SELECT {{username}}",
		"SELECT {{name",
		"SELECT 1; SELECT 2",
		"E{{password}}",
		"U&{{name}}",
		"{{{name}}}",
		"",
	} {
		f.Add(s)
	}
	benign := testValues
	hostile := Values{
		Name:       `x"; DROP ROLE postgres; -- {{password}} $$ */ '`,
		Password:   `y'; DROP ROLE postgres; -- {{name}} \' $$ /* "`,
		Expiration: time.Date(2030, 1, 2, 3, 4, 5, 6000, time.FixedZone("z", -7*3600)),
	}
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := ParseTemplate(s)
		if err != nil {
			if tmpl.String() != "" || tmpl.pieces != nil {
				t.Fatalf("ParseTemplate(%q) returned a non-zero Template with error %v", s, err)
			}
			return
		}
		if tmpl.String() != s {
			t.Fatalf("String() = %q, want %q", tmpl.String(), s)
		}
		out, err := tmpl.Render(benign)
		if err != nil {
			t.Fatalf("Render(%q) with valid values: %v", s, err)
		}
		for _, ph := range []string{"{{name}}", "{{password}}", "{{expiration}}"} {
			if strings.Contains(out, ph) {
				t.Fatalf("Render(%q) = %q still contains %s", s, out, ph)
			}
		}
		// The output is itself a valid placeholder-free template.
		again, err := ParseTemplate(out)
		if err != nil {
			t.Fatalf("rendered %q does not parse: %v", out, err)
		}
		for _, ph := range []string{"name", "password", "expiration"} {
			if again.Uses(ph) {
				t.Fatalf("rendered %q still uses %s", out, ph)
			}
		}
		// Hostile values stay inside their quotes: the output is still
		// exactly one well-formed statement.
		out, err = tmpl.Render(hostile)
		if err != nil {
			t.Fatalf("Render(%q) with hostile values: %v", s, err)
		}
		if _, err := lex(out, false); err != nil {
			t.Fatalf("rendered %q with hostile values is not one statement: %v", out, err)
		}
	})
}

func FuzzQuoteLiteral(f *testing.F) {
	for _, s := range []string{"", "'", "''", `\`, `\'`, "a'b", "\x00", "{{name}}", "ü'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := QuoteLiteral(s)
		if err != nil {
			if !strings.Contains(s, "\x00") {
				t.Fatalf("QuoteLiteral(%q): unexpected error %v", s, err)
			}
			return
		}
		if len(out) < 2 || out[0] != '\'' || out[len(out)-1] != '\'' {
			t.Fatalf("QuoteLiteral(%q) = %q does not start and end with '", s, out)
		}
		inner := out[1 : len(out)-1]
		var unq strings.Builder
		for i := 0; i < len(inner); i++ {
			if inner[i] == '\'' {
				if i+1 >= len(inner) || inner[i+1] != '\'' {
					t.Fatalf("QuoteLiteral(%q) = %q has an unescaped ' at offset %d", s, out, i+1)
				}
				i++
			}
			unq.WriteByte(inner[i])
		}
		if unq.String() != s {
			t.Fatalf("QuoteLiteral(%q) = %q unquotes to %q", s, out, unq.String())
		}
		if _, err := lex("SELECT "+out, false); err != nil {
			t.Fatalf("SELECT %s does not lex: %v", out, err)
		}
	})
}

func FuzzQuoteIdentifier(f *testing.F) {
	for _, s := range []string{"", `"`, `""`, "a", `a"b`, "\x00", "{{name}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := QuoteIdentifier(s)
		if err != nil {
			if s != "" && !strings.Contains(s, "\x00") {
				t.Fatalf("QuoteIdentifier(%q): unexpected error %v", s, err)
			}
			return
		}
		if len(out) < 3 || out[0] != '"' || out[len(out)-1] != '"' {
			t.Fatalf("QuoteIdentifier(%q) = %q is not delimited", s, out)
		}
		if got := strings.ReplaceAll(out[1:len(out)-1], `""`, `"`); got != s || strings.Count(out[1:len(out)-1], `"`)%2 != 0 {
			t.Fatalf("QuoteIdentifier(%q) = %q unquotes to %q", s, out, got)
		}
		if _, err := lex("SELECT "+out, false); err != nil {
			t.Fatalf("SELECT %s does not lex: %v", out, err)
		}
	})
}

func BenchmarkSCRAMVerifier(b *testing.B) {
	password, err := NewPassword()
	if err != nil {
		b.Fatal(err)
	}
	for _, iter := range []int{4096, 1024} {
		b.Run("iterations="+strconv.Itoa(iter), func(b *testing.B) {
			for b.Loop() {
				if _, err := SCRAMVerifier(password, iter); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
