// Package localapi is the wire contract of the extension's local HTTP API: the paths,
// headers, default port, answer documents and error codes that the extension's server
// (package localserver) writes and that function code (package extension/client, or any
// HTTP client in another runtime) reads.
//
// It is the one definition of that contract, shared by both sides so a field cannot
// drift between them. It imports only the standard library: the extension binary links
// it without linking what extension/client needs for connection pools (pgx).
//
//	GET /v1/credentials/{name}[?refresh=true]   header X-Ephemera-Token: $AWS_SESSION_TOKEN
//	    200 Credential
//	GET /v1/aws/{name}[?refresh=true]           header Authorization: $AWS_SESSION_TOKEN
//	    200 AWSCredentials (the AWS SDKs' container-credentials document)
//	GET /v1/health
//	    200 Health
//
// Failures are an ErrorDocument ({"error": {"code", "message"}}), except under
// /v1/aws/, where they are an AWSError ({"code", "message"}) as the AWS SDKs expect.
package localapi

import (
	"fmt"
	"log/slog"
	"time"
)

// DefaultPort is the local API's port on 127.0.0.1 when EPHEMERA_PORT is unset. No common
// Lambda extension listens on it (see package extension/config for the ports they use).
const DefaultPort = 7411

// Paths of the local API; a name follows the two prefixes.
const (
	PathCredentials = "/v1/credentials/"
	PathAWS         = "/v1/aws/"
	PathHealth      = "/v1/health"
)

// Headers of the local API.
const (
	// HeaderToken carries the sandbox's AWS_SESSION_TOKEN on every credential read.
	HeaderToken = "X-Ephemera-Token"
	// HeaderAuthorization is where the AWS SDKs' container credentials provider sends
	// AWS_CONTAINER_AUTHORIZATION_TOKEN, verbatim (no scheme); accepted under /v1/aws/.
	HeaderAuthorization = "Authorization"
)

// Error codes of the local API.
const (
	CodeUnauthorized      = "unauthorized"        // 401: token missing or wrong
	CodeNotFound          = "not_found"           // 404: no such name or endpoint
	CodeInvalidRequest    = "invalid_request"     // 400: e.g. refresh is not a boolean
	CodeMethodNotAllowed  = "method_not_allowed"  // 405: only GET and HEAD
	CodeMisdirected       = "misdirected_request" // 421: a Host other than 127.0.0.1/localhost:PORT
	CodeNotReady          = "not_ready"           // 503: INIT failed or is still running
	CodeBrokerUnavailable = "broker_unavailable"  // 503: the broker cannot be reached
	CodeBrokerRefused     = "broker_refused"      // 502: the broker refused (its code is in the message)
	CodeInternal          = "internal"            // 500
)

// Credential is the answer of GET /v1/credentials/{name}: a database user that exists
// only until ExpiresAt. DSN is a libpq keyword/value string with every value quoted,
// password included. Printing a Credential (String, GoString, slog) hides the password
// and the DSN; encoding it as JSON does not — that is the answer.
type Credential struct {
	Name      string    `json:"name"`
	Username  string    `json:"username"`
	Password  string    `json:"password"`
	Host      string    `json:"host"`
	Port      int       `json:"port"`
	DBName    string    `json:"dbname"`
	SSLMode   string    `json:"sslmode"`
	DSN       string    `json:"dsn"`
	LeaseID   string    `json:"lease_id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// String describes the credential without its password and DSN.
func (c Credential) String() string {
	return fmt.Sprintf("{name %s user %s password [redacted] %s:%d/%s sslmode %s lease %s expires %s}",
		c.Name, c.Username, c.Host, c.Port, c.DBName, c.SSLMode, c.LeaseID, c.ExpiresAt.Format(time.RFC3339))
}

// GoString is String, so that %#v hides the secrets too.
func (c Credential) GoString() string { return "localapi.Credential" + c.String() }

// LogValue logs the credential without its password and DSN.
func (c Credential) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", c.Name), slog.String("username", c.Username),
		slog.String("lease_id", c.LeaseID), slog.Time("expires_at", c.ExpiresAt))
}

// AWSCredentials is the answer of GET /v1/aws/{name}: the document of the AWS SDKs'
// container credentials provider. Expiration is RFC 3339 in UTC, whole seconds.
// Printing it hides the secret access key and the token.
type AWSCredentials struct {
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
	Token           string `json:"Token"`
	Expiration      string `json:"Expiration"`
}

// String describes the session without its secret access key and token.
func (c AWSCredentials) String() string {
	return fmt.Sprintf("{access key %s secret [redacted] token [redacted] expires %s}", c.AccessKeyID, c.Expiration)
}

// GoString is String, so that %#v hides the secrets too.
func (c AWSCredentials) GoString() string { return "localapi.AWSCredentials" + c.String() }

// Health is the answer of GET /v1/health; it needs no token and holds no secret.
type Health struct {
	Ready bool `json:"ready"`
}

// ErrorDocument is the body of a failure outside /v1/aws/.
type ErrorDocument struct {
	Error ErrorBody `json:"error"`
}

// ErrorBody is the inside of an ErrorDocument, and the whole body of a failure under
// /v1/aws/ (the shape the AWS SDKs decode).
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// AWSError is the body of a failure under /v1/aws/.
type AWSError = ErrorBody
