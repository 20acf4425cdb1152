package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/extension/localapi"
)

// redacted replaces a secret wherever a Credential is printed.
const redacted = "[REDACTED]"

// Credential is one database credential served by the extension: a
// PostgreSQL user that exists only until ExpiresAt.
//
// Printing a Credential never shows its secrets: String, every fmt verb
// (%v, %+v, %#v, %s, %q), slog (via LogValue) and encoding/json (via
// MarshalJSON) show Password and DSN as "[REDACTED]" or leave them out. Read
// the fields directly when you need them.
type Credential struct {
	Name      string    // the name the function asked for, e.g. "orders"
	Username  string    // the PostgreSQL user, e.g. "eph_readonly_k3x9..."
	Password  string    // secret
	Host      string    // database host
	Port      int       // database port
	DBName    string    // database name
	SSLMode   string    // libpq sslmode, e.g. "verify-full"
	DSN       string    // a complete connection string, including the password: secret
	LeaseID   string    // the broker's lease id
	ExpiresAt time.Time // when the user stops accepting new logins and its sessions may be ended
}

// String returns the credential with its password and DSN redacted.
func (c Credential) String() string {
	return fmt.Sprintf("{Name:%s Username:%s Password:%s Host:%s Port:%d DBName:%s SSLMode:%s DSN:%s LeaseID:%s ExpiresAt:%s}",
		c.Name, c.Username, mask(c.Password), c.Host, c.Port, c.DBName, c.SSLMode, mask(c.DSN), c.LeaseID,
		c.ExpiresAt.Format(time.RFC3339))
}

// GoString returns a Go-syntax representation with the password and DSN
// redacted; fmt uses it for %#v.
func (c Credential) GoString() string {
	return fmt.Sprintf("client.Credential{Name:%q, Username:%q, Password:%q, Host:%q, Port:%d, DBName:%q, SSLMode:%q, DSN:%q, LeaseID:%q, ExpiresAt:%#v}",
		c.Name, c.Username, mask(c.Password), c.Host, c.Port, c.DBName, c.SSLMode, mask(c.DSN), c.LeaseID, c.ExpiresAt)
}

// Format implements fmt.Formatter so that no verb or flag prints a secret:
// %#v prints GoString, %q a quoted String, every other verb String.
func (c Credential) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		_, _ = io.WriteString(f, c.GoString())
	case verb == 'q':
		_, _ = fmt.Fprintf(f, "%q", c.String())
	default:
		_, _ = io.WriteString(f, c.String())
	}
}

// LogValue implements slog.LogValuer: a group of the credential's
// non-secret fields. Password and DSN are left out.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("name", c.Name),
		slog.String("username", c.Username),
		slog.String("host", c.Host),
		slog.Int("port", c.Port),
		slog.String("dbname", c.DBName),
		slog.String("sslmode", c.SSLMode),
		slog.String("lease_id", c.LeaseID),
		slog.Time("expires_at", c.ExpiresAt),
	)
}

// MarshalJSON implements json.Marshaler with the password and DSN
// redacted, so that a Credential logged or returned as JSON by mistake
// leaks nothing. (A Credential therefore does not survive a JSON round
// trip; that is deliberate.)
func (c Credential) MarshalJSON() ([]byte, error) {
	return json.Marshal(localapi.Credential{
		Name: c.Name, Username: c.Username, Password: mask(c.Password), Host: c.Host, Port: c.Port,
		DBName: c.DBName, SSLMode: c.SSLMode, DSN: mask(c.DSN), LeaseID: c.LeaseID, ExpiresAt: c.ExpiresAt,
	})
}

func mask(secret string) string {
	if secret == "" {
		return ""
	}
	return redacted
}

// fromWire validates the extension's answer and converts it. Its errors never
// quote a value.
func fromWire(w localapi.Credential) (*Credential, error) {
	var missing []string
	if w.Username == "" {
		missing = append(missing, "username")
	}
	if w.Password == "" && w.DSN == "" {
		missing = append(missing, "password")
	}
	if w.ExpiresAt.IsZero() {
		missing = append(missing, "expires_at")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	return &Credential{
		Name: w.Name, Username: w.Username, Password: w.Password, Host: w.Host, Port: w.Port,
		DBName: w.DBName, SSLMode: w.SSLMode, DSN: w.DSN, LeaseID: w.LeaseID, ExpiresAt: w.ExpiresAt,
	}, nil
}

// Source gives the current credential of a name. The extension-backed
// *Client is the live implementation; Static is a fixed one for tests.
type Source interface {
	// Credentials returns the current credential of name. A Source may
	// cache it; it must return a credential that is not yet expired.
	Credentials(ctx context.Context, name string) (*Credential, error)
	// Refresh returns a new credential of name, replacing the current one
	// (PoolConfig calls it only when the database refuses a credential).
	Refresh(ctx context.Context, name string) (*Credential, error)
}

var (
	_ Source = (*Client)(nil)
	_ Source = Static{}
)

// Static is a Source that always returns the same credential: use it in
// tests, or to run function code outside Lambda against a fixed user.
// If Credential.Name is set, other names give an error that matches
// ErrNotFound.
type Static struct{ Credential }

// Credentials returns a copy of s.Credential.
func (s Static) Credentials(_ context.Context, name string) (*Credential, error) {
	if s.Name != "" && name != s.Name {
		return nil, &Error{Name: name, StatusCode: 404, Code: "not_found", Message: "static source holds " + s.Name}
	}
	c := s.Credential
	return &c, nil
}

// Refresh is the same as Credentials: a static credential never changes.
func (s Static) Refresh(ctx context.Context, name string) (*Credential, error) {
	return s.Credentials(ctx, name)
}
