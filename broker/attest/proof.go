package attest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ephemera-sh/ephemera/broker/api"
)

// Header names and fixed values of a proof.
const (
	HeaderAudience = "X-Ephemera-Audience"
	HeaderNonce    = "X-Ephemera-Nonce"
	// RequestBody is the only body a proof may carry.
	RequestBody = "Action=GetCallerIdentity&Version=2011-06-15"
	// ContentType is the Content-Type the extension signs.
	ContentType = "application/x-www-form-urlencoded; charset=utf-8"
	// AmzDateFormat is the layout of the X-Amz-Date header.
	AmzDateFormat = "20060102T150405Z"
)

// Proof is a signed, unsent STS GetCallerIdentity request: the wire type
// of package api, named here because signing and verifying it is this
// package's job.
type Proof = api.Proof

// Principal is the identity STS vouched for: an IAM role, through one of
// its sessions (the usual case: a Lambda execution role), or, only with
// Config.AllowIAMUsers, an IAM user. Kind tells which; the two are never
// interchangeable, and package policy gives them different Cedar types.
type Principal struct {
	// ARN is the ARN STS returned (assumed-role or, if allowed, IAM user).
	ARN string `json:"arn"`
	// Account is the 12-digit AWS account id.
	Account string `json:"account"`
	// Kind is KindRole (the zero value) or KindUser.
	Kind PrincipalKind `json:"kind,omitempty"`
	// Role is the role name. For an IAM user it holds the user name, for
	// callers that predate Kind; check Kind (or IsUser) before using it as
	// a role.
	Role string `json:"role"`
	// User is the IAM user name; "" for a role.
	User string `json:"user,omitempty"`
	// RoleARN is the canonical, path-less ARN of the principal:
	// arn:<p>:iam::<acct>:role/<role>, or arn:<p>:iam::<acct>:user/<user>
	// for an IAM user. It is the principal's name in leases and policies.
	RoleARN string `json:"role_arn"`
	// Session is the role session name; for Lambda, the function name. For
	// an IAM user, the user name.
	Session string `json:"session"`
	// UserID is STS's UserId (e.g. AROA...:session, or AIDA... for a user).
	UserID string `json:"user_id"`
}

// IsUser reports whether p is an IAM user rather than a role.
func (p *Principal) IsUser() bool { return p.Kind == KindUser }

// ParseProof decodes the JSON form of a proof with the broker's strict
// rules (api.Unmarshal): unknown fields, duplicate keys, keys that differ
// only in case (such as "Host" and "host" among the headers), NUL
// characters and invalid UTF-8 are refused, so that no two readers of the
// same JSON can see different proofs. Errors are *Error with code
// invalid_proof and check 0; they quote no value of the input.
func ParseProof(data []byte) (*Proof, error) {
	var p Proof
	if err := api.Unmarshal(data, &p); err != nil {
		return nil, &Error{Code: CodeInvalidProof, Message: "identity proof is not valid JSON of a proof", Err: err}
	}
	return &p, nil
}

// NewNonce returns 32 lowercase hex characters from crypto/rand.
func NewNonce() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("attest: nonce: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// STSHost returns the regional STS host name for region.
func STSHost(region string) string { return "sts." + region + ".amazonaws.com" }

// Sign builds a proof for audience, signed with creds for the regional STS
// endpoint of region at time now. It sends nothing.
func Sign(ctx context.Context, creds aws.Credentials, region, audience string, now time.Time) (*Proof, error) {
	if region == "" {
		return nil, errors.New("attest: sign: region is empty")
	}
	if audience == "" {
		return nil, errors.New("attest: sign: audience is empty")
	}
	if creds.AccessKeyID == "" || creds.SecretAccessKey == "" {
		return nil, errors.New("attest: sign: credentials are empty")
	}
	nonce, err := NewNonce()
	if err != nil {
		return nil, err
	}
	host := STSHost(region)
	body := []byte(RequestBody)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+host+"/", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("attest: sign: %w", err)
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set(HeaderAudience, audience)
	req.Header.Set(HeaderNonce, nonce)
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "sts", region, now.UTC()); err != nil {
		return nil, fmt.Errorf("attest: sign: %w", err)
	}
	headers := make(map[string][]string, len(req.Header)+2)
	for k, v := range req.Header {
		headers[k] = append([]string(nil), v...)
	}
	headers["Host"] = []string{host}
	headers["Content-Length"] = []string{strconv.Itoa(len(body))}
	return &Proof{Method: http.MethodPost, URL: "https://" + host + "/", Headers: headers, Body: body}, nil
}
