package pgrole

import (
	"fmt"
	"strings"
)

// lex splits s into text and placeholder pieces, following PostgreSQL's
// lexical rules closely enough to know what is quoted (see the package
// documentation). With placeholders false, "{{" is ordinary text; tests use
// that mode to check that rendered output is still one well-formed
// statement.
func lex(s string, placeholders bool) ([]piece, error) {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return nil, fmt.Errorf("pgrole: NUL byte at offset %d", i)
	}
	var (
		pieces     []piece
		textStart  int  // start of the pending text piece
		sawToken   bool // anything but whitespace and comments seen
		inIdent    bool // s[i-1] is part of an unquoted identifier or keyword
		identStart int  // start of that identifier
	)
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case placeholders && c == '{' && strings.HasPrefix(s[i:], "{{"):
			ph, end, err := readPlaceholder(s, i)
			if err != nil {
				return nil, err
			}
			if i > 0 && gluedBefore(s[i-1]) {
				return nil, fmt.Errorf("pgrole: placeholder %s at offset %d is directly preceded by %q; separate it with a space", s[i:end], i, s[i-1:i])
			}
			if end < len(s) && (gluedAfter(s[end]) || strings.HasPrefix(s[end:], "{{")) {
				return nil, fmt.Errorf("pgrole: placeholder %s at offset %d is directly followed by %q; separate it with a space", s[i:end], i, s[end:end+1])
			}
			if textStart < i {
				pieces = append(pieces, piece{text: s[textStart:i]})
			}
			pieces = append(pieces, piece{ph: ph})
			i, textStart = end, end
			sawToken, inIdent = true, false

		case c == '-' && strings.HasPrefix(s[i:], "--"):
			end := len(s)
			if k := strings.IndexAny(s[i:], "\n\r"); k >= 0 {
				end = i + k
			}
			if err := checkNoPlaceholder(s, i, end, "a comment", placeholders); err != nil {
				return nil, err
			}
			i, inIdent = end, false

		case c == '/' && strings.HasPrefix(s[i:], "/*"):
			end, err := blockCommentEnd(s, i)
			if err != nil {
				return nil, err
			}
			if err := checkNoPlaceholder(s, i, end, "a comment", placeholders); err != nil {
				return nil, err
			}
			i, inIdent = end, false

		case c == '\'':
			// E'...' (a lone E or e right before the quote) is an escape
			// string, where backslash escapes the next byte. Every other
			// form ('...', B'...', X'...', N'...', U&'...') follows the standard rules
			// under standard_conforming_strings = on.
			escape := inIdent && identStart == i-1 && (s[i-1] == 'E' || s[i-1] == 'e')
			start, what := i, "a quoted string"
			if escape {
				start, what = i-1, "an escape string (E'...')"
			}
			end, err := quotedEnd(s, start, i, '\'', escape, what)
			if err != nil {
				return nil, err
			}
			if err := checkNoPlaceholder(s, start, end, what, placeholders); err != nil {
				return nil, err
			}
			i, sawToken, inIdent = end, true, false

		case c == '"':
			end, err := quotedEnd(s, i, i, '"', false, "a quoted identifier")
			if err != nil {
				return nil, err
			}
			if err := checkNoPlaceholder(s, i, end, "a quoted identifier", placeholders); err != nil {
				return nil, err
			}
			i, sawToken, inIdent = end, true, false

		case c == '$' && !inIdent:
			sawToken = true
			n := dollarTagLen(s[i:])
			if n == 0 { // a parameter such as $1, or a lone $
				i++
				continue
			}
			tag := s[i : i+n]
			k := strings.Index(s[i+n:], tag)
			if k < 0 {
				return nil, fmt.Errorf("pgrole: unterminated dollar-quoted string %s starting at offset %d", tag, i)
			}
			end := i + n + k + n
			if err := checkNoPlaceholder(s, i, end, "a dollar-quoted string", placeholders); err != nil {
				return nil, err
			}
			i, inIdent = end, false

		case c == ';':
			return nil, fmt.Errorf("pgrole: ';' at offset %d outside quotes; a template must be exactly one statement, without a trailing ';'", i)

		case isSpace(c):
			i, inIdent = i+1, false

		default:
			sawToken = true
			switch {
			case inIdent && isIdentCont(c):
			case isIdentStart(c):
				inIdent, identStart = true, i
			default:
				inIdent = false
			}
			i++
		}
	}
	if !sawToken {
		return nil, fmt.Errorf("pgrole: empty statement: nothing but whitespace or comments from offset 0 to %d", len(s))
	}
	if textStart < len(s) {
		pieces = append(pieces, piece{text: s[textStart:]})
	}
	return pieces, nil
}

// readPlaceholder reads the placeholder whose "{{" is at s[i].
func readPlaceholder(s string, i int) (placeholder, int, error) {
	k := strings.Index(s[i+2:], "}}")
	if k < 0 || strings.Contains(s[i+2:i+2+k], "{{") {
		return phNone, 0, fmt.Errorf(`pgrole: unterminated "{{" at offset %d`, i)
	}
	end := i + 2 + k + 2
	ph := lookupPlaceholder(s[i+2 : end-2])
	if ph == phNone {
		return phNone, 0, fmt.Errorf("pgrole: unknown placeholder %s at offset %d; known placeholders are {{name}}, {{password}} and {{expiration}}", shorten(s[i:end]), i)
	}
	return ph, end, nil
}

// checkNoPlaceholder refuses "{{" inside the quoted string or comment
// s[start:end].
func checkNoPlaceholder(s string, start, end int, what string, placeholders bool) error {
	if !placeholders {
		return nil
	}
	k := strings.Index(s[start:end], "{{")
	if k < 0 {
		return nil
	}
	at := start + k
	shown := `"{{"`
	if j := strings.Index(s[at:end], "}}"); j >= 0 {
		shown = shorten(s[at : at+j+2])
	}
	if what == "a comment" {
		return fmt.Errorf("pgrole: %s at offset %d is inside a comment starting at offset %d; placeholders are not allowed in comments", shown, at, start)
	}
	return fmt.Errorf("pgrole: %s at offset %d is inside %s starting at offset %d; placeholders are quoted for you, so write them without quotes", shown, at, what, start)
}

// shorten quotes a piece of template text for an error message, cutting it
// if it is long.
func shorten(s string) string {
	const maxShown = 40
	if len(s) > maxShown {
		return fmt.Sprintf("%q...", s[:maxShown])
	}
	return fmt.Sprintf("%q", s)
}

// quotedEnd returns the offset just past the quoted token whose opening
// quote q is at s[i] (start is where the token begins, before any prefix
// such as E). A doubled quote stands for one quote; with backslash, a
// backslash escapes the following byte.
func quotedEnd(s string, start, i int, q byte, backslash bool, what string) (int, error) {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if backslash {
				j++
			}
		case q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("pgrole: unterminated %s starting at offset %d", strings.TrimPrefix(strings.TrimPrefix(what, "an "), "a "), start)
}

// blockCommentEnd returns the offset just past the (possibly nested) block
// comment whose "/*" is at s[i].
func blockCommentEnd(s string, i int) (int, error) {
	depth := 1
	for j := i + 2; j < len(s); {
		switch {
		case strings.HasPrefix(s[j:], "/*"):
			depth++
			j += 2
		case strings.HasPrefix(s[j:], "*/"):
			depth--
			j += 2
			if depth == 0 {
				return j, nil
			}
		default:
			j++
		}
	}
	return 0, fmt.Errorf("pgrole: unterminated comment starting at offset %d", i)
}

// dollarTagLen returns the length of the dollar-quote delimiter ($$ or
// $tag$) at the start of s, or 0 if there is none.
func dollarTagLen(s string) int {
	if len(s) < 2 || s[0] != '$' {
		return 0
	}
	if s[1] == '$' {
		return 2
	}
	if !isIdentStart(s[1]) {
		return 0
	}
	for j := 2; j < len(s); j++ {
		switch c := s[j]; {
		case c == '$':
			return j + 1
		case isIdentStart(c) || isDigit(c):
		default:
			return 0
		}
	}
	return 0
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isIdentStart matches PostgreSQL's ident_start: [A-Za-z\200-\377_].
func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c >= 0x80
}

// isIdentCont matches PostgreSQL's ident_cont: [A-Za-z\200-\377_0-9$].
func isIdentCont(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }

// gluedBefore reports whether c directly before a placeholder would change
// how PostgreSQL reads the quoted value: a word character (E'...' escape
// strings, the B, X and N string prefixes, or simply two tokens run
// together), '&' (U&'...' and U&"..." Unicode escapes), or a quote (two
// adjacent quoted tokens merge into one).
func gluedBefore(c byte) bool { return isIdentCont(c) || c == '&' || c == '\'' || c == '"' }

// gluedAfter is gluedBefore for the byte directly after a placeholder.
func gluedAfter(c byte) bool { return isIdentCont(c) || c == '\'' || c == '"' }
