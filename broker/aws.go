package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/policy"
)

type awsRequest struct {
	Identity   *attest.Proof `json:"identity"`
	Profile    string        `json:"profile"`
	TTLSeconds *int64        `json:"ttl_seconds"`
}

// AWSCredential is the answer of POST /v1/aws-credentials. Like Credential,
// it is never logged.
type AWSCredential struct {
	LeaseID         string    `json:"lease_id"`
	AccessKeyID     string    `json:"access_key_id"`
	SecretAccessKey string    `json:"secret_access_key"`
	SessionToken    string    `json:"session_token"`
	Expiration      time.Time `json:"expiration"`
}

// assumer is the part of the STS client the broker uses.
type assumer interface {
	AssumeRole(ctx context.Context, in *sts.AssumeRoleInput, opts ...func(*sts.Options)) (*sts.AssumeRoleOutput, error)
}

// newAssumer builds the STS client for AssumeRole, sent to the configured
// STS endpoint (EPHEMERA_STS_ENDPOINT) when there is one.
func newAssumer(cfg aws.Config, endpoint string, client *http.Client) assumer {
	return sts.NewFromConfig(cfg, func(o *sts.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		if client != nil {
			o.HTTPClient = client
		}
	})
}

var stsNameRE = regexp.MustCompile(`[^\w+=,.@-]`)

// stsName fits s to STS's RoleSessionName / SourceIdentity rules:
// [\w+=,.@-], 2 to 64 characters.
func stsName(s string) string {
	s = stsNameRE.ReplaceAllString(s, "_")
	if len(s) > 64 {
		s = s[:64]
	}
	for len(s) < 2 {
		s += "_"
	}
	return s
}

func (b *Broker) handleAWSCredentials(r *http.Request, ri *reqInfo) (status int, body any, aerr *apiError) {
	ctx := r.Context()
	rec := b.record(ri, audit.EventAssume)
	rec.Database = b.cfg.ReplayDatabase // AWS sessions are audited in the state database
	defer func() { b.finish(ctx, ri, rec, aerr) }()
	var req awsRequest
	if aerr = decode(r, &req); aerr != nil {
		return
	}
	rec.AWSProfile = req.Profile
	p, err := b.verify(ctx, req.Identity)
	if err != nil {
		return 0, nil, fromVerify(err)
	}
	withPrincipal(&rec, p)
	prof := b.cfg.AWSProfiles[req.Profile]
	if prof == nil {
		return 0, nil, fail(CodeNotFound, fmt.Sprintf("AWS profile %q is not configured", truncate(req.Profile, 64)))
	}
	ttl := prof.DefaultTTL
	if req.TTLSeconds != nil {
		switch secs := *req.TTLSeconds; {
		case secs > int64(prof.MaxTTL/time.Second):
			return 0, nil, fail(CodeTTLExceedsMax, fmt.Sprintf("ttl_seconds %d exceeds the profile's max_ttl of %d", secs, int64(prof.MaxTTL/time.Second)))
		case secs < 900:
			return 0, nil, fail(CodeInvalidRequest, "ttl_seconds must be at least 900 (the STS minimum)")
		default:
			ttl = time.Duration(secs) * time.Second
		}
	}
	rec.TTLSeconds = int64(ttl / time.Second)
	preq := b.policyRequest(p, ri, policy.ActionAssume, "", "", ttl)
	preq.Profile = prof.Name
	if aerr = b.decide(&rec, preq); aerr != nil {
		aerr.Message = fmt.Sprintf("no policy permits assume of AWS profile %q", prof.Name)
		return 0, nil, aerr
	}
	if b.assumer == nil {
		return 0, nil, &apiError{Code: CodeSTSUnavailable, Message: "the broker has no AWS credentials to assume roles with"}
	}
	leaseID, err := lease.NewID()
	if err != nil {
		return 0, nil, &apiError{Code: CodeInternal, Message: "internal error", cause: err}
	}
	in := &sts.AssumeRoleInput{
		RoleArn:         aws.String(prof.RoleARN),
		RoleSessionName: aws.String(stsName(p.Session)),
		SourceIdentity:  aws.String(stsName(p.Role)),
		DurationSeconds: aws.Int32(int32(ttl / time.Second)),
	}
	if prof.SessionPolicy != "" {
		in.Policy = aws.String(prof.SessionPolicy)
	}
	for _, k := range slices.Sorted(maps.Keys(prof.SessionTags)) {
		in.Tags = append(in.Tags, ststypes.Tag{Key: aws.String(k), Value: aws.String(prof.SessionTags[k])})
	}
	rec.SourceIdentity, rec.LeaseID = *in.SourceIdentity, leaseID
	actx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := b.assumer.AssumeRole(actx, in)
	if err != nil {
		msg := "STS did not issue the session"
		var ae smithy.APIError
		if errors.As(err, &ae) {
			msg += ": " + ae.ErrorCode() // codes only: messages may echo request data
		}
		return 0, nil, &apiError{Code: CodeSTSUnavailable, Message: msg, cause: errors.New(msg)}
	}
	c := out.Credentials
	if c == nil || c.AccessKeyId == nil || c.SecretAccessKey == nil || c.SessionToken == nil || c.Expiration == nil {
		return 0, nil, &apiError{Code: CodeSTSUnavailable, Message: "STS answered without credentials"}
	}
	return http.StatusCreated, AWSCredential{
		LeaseID: leaseID, AccessKeyID: *c.AccessKeyId, SecretAccessKey: *c.SecretAccessKey,
		SessionToken: *c.SessionToken, Expiration: c.Expiration.UTC(),
	}, nil
}
