package pgrole

import (
	"errors"
	"fmt"
	"strings"
)

// QuoteIdentifier quotes s as a PostgreSQL delimited identifier: it wraps s
// in double quotes and doubles every double quote inside. Case and all other
// bytes are preserved. It returns an error if s is empty or contains a NUL
// byte, neither of which PostgreSQL accepts in an identifier.
//
// QuoteIdentifier does not enforce PostgreSQL's 63-byte identifier limit
// (the server truncates longer names); [Template.Render] and
// [GrantMembership] do.
func QuoteIdentifier(s string) (string, error) {
	if p := identifierProblem(s, false); p != "" {
		return "", errors.New("pgrole: identifier " + p)
	}
	return quoteIdent(s), nil
}

// QuoteLiteral quotes s as a standard-conforming SQL string literal: it wraps
// s in single quotes and doubles every single quote inside, so the empty
// string becomes a pair of single quotes. It returns an error if s contains a NUL byte, which PostgreSQL
// does not accept in text. The error never contains s.
//
// Backslashes are copied unchanged. That is correct only when the session
// has standard_conforming_strings = on (the PostgreSQL default, and set
// explicitly by the broker on its connections); with it off, a backslash
// would escape the following quote. The result must not be placed directly
// after an E, U& or any other prefix; [ParseTemplate] refuses templates that
// would do so.
func QuoteLiteral(s string) (string, error) {
	if p := literalProblem(s); p != "" {
		return "", errors.New("pgrole: literal " + p)
	}
	return quoteLit(s), nil
}

// GrantMembership returns the statement GRANT "group" TO "name", with both
// names quoted as by [QuoteIdentifier]. It returns an error if either name
// is empty, contains a NUL byte, or is longer than 63 bytes (PostgreSQL
// would truncate it, possibly into the name of a different role).
func GrantMembership(group, name string) (string, error) {
	if p := identifierProblem(group, true); p != "" {
		return "", errors.New("pgrole: group name " + p)
	}
	if p := identifierProblem(name, true); p != "" {
		return "", errors.New("pgrole: member name " + p)
	}
	return "GRANT " + quoteIdent(group) + " TO " + quoteIdent(name), nil
}

// identifierProblem describes why s cannot be quoted as an identifier, or
// returns "". With roleLimit it also enforces the 63-byte limit. The
// description never contains s.
func identifierProblem(s string, roleLimit bool) string {
	if s == "" {
		return "is empty"
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Sprintf("contains NUL byte at offset %d", i)
	}
	if roleLimit && len(s) > maxIdentifierLen {
		return fmt.Sprintf("is %d bytes, longer than PostgreSQL's %d-byte identifier limit", len(s), maxIdentifierLen)
	}
	return ""
}

// literalProblem describes why s cannot be quoted as a literal, or returns
// "". The description never contains s.
func literalProblem(s string) string {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Sprintf("contains NUL byte at offset %d", i)
	}
	return ""
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteLit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
