package api

import "time"

// Paths of the broker's HTTP API.
const (
	PathCredentials    = "/v1/credentials"
	PathRenew          = "/v1/leases/{lease_id}/renew"
	PathRevoke         = "/v1/leases/{lease_id}/revoke"
	PathAdminRevoke    = "/v1/admin/revoke"
	PathAWSCredentials = "/v1/aws-credentials"
	PathHealth         = "/v1/health"
)

// RenewPath and RevokePath fill a lease id into PathRenew and PathRevoke.
func RenewPath(leaseID string) string  { return "/v1/leases/" + leaseID + "/renew" }
func RevokePath(leaseID string) string { return "/v1/leases/" + leaseID + "/revoke" }

// MaxBodyBytes is the largest request body the API accepts.
const MaxBodyBytes = 64 << 10

// Proof is a signed, unsent STS GetCallerIdentity request: the caller's
// identity proof. Body is raw bytes, carried in JSON as standard base64.
// Package attest signs and verifies it.
type Proof struct {
	Method  string              `json:"method"`
	URL     string              `json:"url"`
	Headers map[string][]string `json:"headers"`
	Body    []byte              `json:"body"`
}

// IssueRequest is the body of POST /v1/credentials.
type IssueRequest struct {
	Identity   *Proof `json:"identity"`
	Database   string `json:"database"`
	Role       string `json:"role"`
	TTLSeconds *int64 `json:"ttl_seconds,omitempty"`
}

// Credential is the answer to a successful issue (201). It is the only
// place a database password ever appears, and it is never logged.
type Credential struct {
	LeaseID      string    `json:"lease_id"`
	Database     string    `json:"database"`
	Role         string    `json:"role"`
	Username     string    `json:"username"`
	Password     string    `json:"password"`
	Host         string    `json:"host"`
	Port         int       `json:"port"`
	DBName       string    `json:"dbname"`
	SSLMode      string    `json:"sslmode"`
	IssuedAt     time.Time `json:"issued_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	MaxExpiresAt time.Time `json:"max_expires_at"`
	Renewable    bool      `json:"renewable"`
}

// RenewRequest is the body of POST /v1/leases/{lease_id}/renew.
type RenewRequest struct {
	Identity   *Proof `json:"identity"`
	TTLSeconds *int64 `json:"ttl_seconds,omitempty"`
}

// Renewal is the answer to a successful renew (200). ExpiresAt never passes
// MaxExpiresAt.
type Renewal struct {
	LeaseID      string    `json:"lease_id"`
	ExpiresAt    time.Time `json:"expires_at"`
	MaxExpiresAt time.Time `json:"max_expires_at"`
}

// RevokeRequest is the body of POST /v1/leases/{lease_id}/revoke.
type RevokeRequest struct {
	Identity *Proof `json:"identity"`
}

// Revocation is the answer to a successful (idempotent) revoke (200).
type Revocation struct {
	LeaseID   string    `json:"lease_id"`
	RevokedAt time.Time `json:"revoked_at"`
}

// AdminRevokeRequest is the body of POST /v1/admin/revoke: every live lease
// of a principal, in one database or all.
type AdminRevokeRequest struct {
	Identity     *Proof `json:"identity"`
	PrincipalARN string `json:"principal_arn"`
	Database     string `json:"database,omitempty"`
}

// AdminRevocation is the answer to a successful admin revoke (200).
// PrincipalARN is the canonical role ARN the request named.
type AdminRevocation struct {
	PrincipalARN string `json:"principal_arn"`
	Revoked      int    `json:"revoked"`
}

// AWSCredentialsRequest is the body of POST /v1/aws-credentials.
type AWSCredentialsRequest struct {
	Identity   *Proof `json:"identity"`
	Profile    string `json:"profile"`
	TTLSeconds *int64 `json:"ttl_seconds,omitempty"`
}

// AWSCredential is the answer of POST /v1/aws-credentials (201): an STS
// session scoped by the profile. Like Credential, it is never logged.
type AWSCredential struct {
	LeaseID         string    `json:"lease_id"`
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key"`
	SessionToken    string    `json:"session_token"`
	Expiration      time.Time `json:"expiration"`
}

// Health is the answer of GET /v1/health. It holds no secret.
type Health struct {
	Status  string `json:"status"`
	Version string `json:"version"`
}
