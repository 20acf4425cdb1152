package pgrole

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Values are the values that [Template.Render] puts in place of the
// placeholders. Only the fields whose placeholders the template uses are
// read, and each of those must be non-empty.
type Values struct {
	// Name fills {{name}}, quoted as an identifier. It is normally the
	// output of NewUsername.
	Name string
	// Password fills {{password}}, quoted as a string literal. It must
	// already be a SCRAM verifier from SCRAMVerifier, never a plaintext
	// password: whatever is rendered reaches the server and may be logged.
	Password string
	// Expiration fills {{expiration}}, converted to UTC and quoted as a
	// timestamptz literal such as '2030-01-02 03:04:05.5+00'.
	Expiration time.Time
}

// placeholder identifies one of the known placeholders.
type placeholder uint8

const (
	phNone placeholder = iota
	phName
	phPassword
	phExpiration
	numPlaceholders
)

var placeholderNames = [numPlaceholders]string{
	phName:       "name",
	phPassword:   "password",
	phExpiration: "expiration",
}

func lookupPlaceholder(name string) placeholder {
	for p := phName; p < numPlaceholders; p++ {
		if placeholderNames[p] == name {
			return p
		}
	}
	return phNone
}

// expirationLayout formats Values.Expiration (always in UTC) for PostgreSQL.
const expirationLayout = "2006-01-02 15:04:05.999999+00"

// piece is a run of template text (ph == phNone) or one placeholder.
type piece struct {
	text string
	ph   placeholder
}

// Template is one SQL statement with {{name}}, {{password}} and
// {{expiration}} placeholders, already split into text and placeholders by
// [ParseTemplate]. It is immutable and safe for concurrent use. The zero
// Template has no statement and cannot be rendered.
type Template struct {
	text   string
	pieces []piece
	uses   [numPlaceholders]bool
}

// DefaultCreation is the statement that creates a user: a login role with
// no special privileges, the SCRAM verifier as its password, and a
// VALID UNTIL time.
var DefaultCreation = MustParseTemplate("CREATE ROLE {{name}} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD {{password}} VALID UNTIL {{expiration}}")

// DefaultRenewal is the statement that extends a user's VALID UNTIL time.
var DefaultRenewal = MustParseTemplate("ALTER ROLE {{name}} VALID UNTIL {{expiration}}")

// ParseTemplate parses stmt, a single SQL statement that may contain the
// placeholders {{name}}, {{password}} and {{expiration}}, written bare:
// Render quotes the values itself.
//
// It returns an error, naming the problem and its byte offset in stmt, if
// stmt contains a NUL byte, an unknown placeholder (such as {{username}}),
// an unterminated "{{", "{{" inside a quoted string, quoted identifier or
// comment (such as '{{password}}'), a placeholder glued to an adjacent word,
// quote or placeholder (such as E{{password}}), an unterminated quote or
// comment, a ';' outside quotes (a template holds exactly one statement, so
// even a trailing ';' is refused), or nothing but whitespace and comments.
// See the package documentation for the lexical rules.
func ParseTemplate(stmt string) (Template, error) {
	pieces, err := lex(stmt, true)
	if err != nil {
		return Template{}, err
	}
	t := Template{text: stmt, pieces: pieces}
	for _, p := range pieces {
		t.uses[p.ph] = true
	}
	t.uses[phNone] = false
	return t, nil
}

// MustParseTemplate is like [ParseTemplate] but panics if stmt does not
// parse. It is meant for templates written in the program, such as
// [DefaultCreation].
func MustParseTemplate(stmt string) Template {
	t, err := ParseTemplate(stmt)
	if err != nil {
		panic(err)
	}
	return t
}

// String returns the original template text. Templates hold placeholders,
// not values, so the text contains no secrets.
func (t Template) String() string { return t.text }

// Uses reports whether the template contains the given placeholder, written
// either bare ("password") or with braces ("{{password}}"). It reports false
// for unknown placeholders.
func (t Template) Uses(placeholder string) bool {
	if strings.HasPrefix(placeholder, "{{") && strings.HasSuffix(placeholder, "}}") && len(placeholder) >= 4 {
		placeholder = placeholder[2 : len(placeholder)-2]
	}
	p := lookupPlaceholder(placeholder)
	return p != phNone && t.uses[p]
}

// Render returns the statement with each placeholder replaced by its quoted
// value: {{name}} by [QuoteIdentifier] of v.Name, {{password}} by
// [QuoteLiteral] of v.Password, and {{expiration}} by [QuoteLiteral] of
// v.Expiration in UTC formatted as "2006-01-02 15:04:05.999999+00".
//
// Render splices values between the pieces that ParseTemplate found, so a
// value containing "{{name}}" or quotes is inserted verbatim (quoted) and
// never expanded again. It returns an error if a used value is empty (the
// empty string or the zero time), if v.Name is longer than PostgreSQL's
// 63-byte identifier limit, if a string contains a NUL byte, if
// v.Expiration's year is outside 1-9999, or if t is the zero Template.
// Errors never contain the values.
func (t Template) Render(v Values) (string, error) {
	if len(t.pieces) == 0 {
		return "", errors.New("pgrole: Render called on a zero Template")
	}
	var quoted [numPlaceholders]string
	if t.uses[phName] {
		if p := identifierProblem(v.Name, true); p != "" {
			return "", errors.New("pgrole: {{name}} value " + p)
		}
		quoted[phName] = quoteIdent(v.Name)
	}
	if t.uses[phPassword] {
		if v.Password == "" {
			return "", errors.New("pgrole: {{password}} value is empty")
		}
		if p := literalProblem(v.Password); p != "" {
			return "", errors.New("pgrole: {{password}} value " + p)
		}
		quoted[phPassword] = quoteLit(v.Password)
	}
	if t.uses[phExpiration] {
		if v.Expiration.IsZero() {
			return "", errors.New("pgrole: {{expiration}} value is the zero time")
		}
		u := v.Expiration.UTC()
		if y := u.Year(); y < 1 || y > 9999 {
			return "", fmt.Errorf("pgrole: {{expiration}} value has year %d, outside 1-9999", y)
		}
		quoted[phExpiration] = quoteLit(u.Format(expirationLayout))
	}
	n := 0
	for _, p := range t.pieces {
		n += len(p.text) + len(quoted[p.ph])
	}
	var b strings.Builder
	b.Grow(n)
	for _, p := range t.pieces {
		if p.ph == phNone {
			b.WriteString(p.text)
		} else {
			b.WriteString(quoted[p.ph])
		}
	}
	return b.String(), nil
}
