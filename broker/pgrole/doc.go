// Package pgrole produces the SQL text that ephemera uses to create, renew
// and grant short-lived PostgreSQL users, and the secrets that go with them.
//
// Nothing in this package talks to a database. It has three jobs:
//
//   - Generate credentials. [NewUsername] returns a name of the form
//     eph_<role>_<random> made only of [a-z0-9_] and at most 63 bytes long,
//     so it is never truncated by PostgreSQL and never taken from caller
//     text. [ValidUsername] checks that form and must be used before any
//     statement that drops or alters a user. [NewPassword] returns 32 random
//     bytes encoded as unpadded base64url.
//
//   - Hide the password from the server. [SCRAMVerifier] computes the
//     SCRAM-SHA-256 verifier (RFC 5802, RFC 7677) in PostgreSQL's pg_authid
//     format. The broker sends that verifier, not the plaintext, in
//     CREATE ROLE ... PASSWORD, so the plaintext never reaches the server or
//     its logs. The iteration count is a setting ([DefaultSCRAMIterations]
//     by default).
//
//   - Fill statement templates safely. A [Template] is one SQL statement in
//     which the only placeholders are {{name}}, {{password}} and
//     {{expiration}}. [ParseTemplate] splits the statement into text and
//     placeholders once; [Template.Render] then inserts each value already
//     quoted ({{name}} as an identifier, the others as string literals). No
//     raw string replacement of caller text ever happens, and a value that
//     itself contains "{{" is never expanded again.
//
// # Assumptions about the session
//
// The quoting in this package is correct for a PostgreSQL session with
// standard_conforming_strings = on (the default since PostgreSQL 9.1; the
// broker sets it explicitly on its connections) and a client_encoding in
// which the bytes ' and " never occur inside a multibyte character (UTF8,
// which pgx uses). Under standard_conforming_strings = off a backslash in a
// '...' literal would act as an escape character and [QuoteLiteral]'s output
// would not be safe.
//
// # Template syntax
//
// [ParseTemplate] understands enough of PostgreSQL's lexical rules to know
// which parts of a statement are quoted: '...' strings (including the B, X,
// N and U& forms), E'...' escape strings, "..." identifiers, $tag$...$tag$
// dollar-quoted strings, -- line comments and nested /* */ block comments.
// A template is rejected if it contains a NUL byte, more than one statement
// (a ';' outside quotes, including a trailing one), no statement at all, an
// unterminated quote or comment, an unknown or unterminated placeholder, "{{" anywhere inside quotes or a
// comment (placeholders are quoted for you, so '{{password}}' is an error),
// or a placeholder glued to a neighbouring word, quote or another placeholder
// (E{{password}} would turn the literal into an escape string and U&{{name}}
// would enable Unicode escapes, so both are refused).
package pgrole
