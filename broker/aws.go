package broker

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	ststypes "github.com/aws/aws-sdk-go-v2/service/sts/types"
	"github.com/aws/smithy-go"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/audit"
	"github.com/ephemera-sh/ephemera/broker/lease"
	"github.com/ephemera-sh/ephemera/broker/policy"
)

// AssumeAWSInput asks for an AWS session of a configured profile.
type AssumeAWSInput struct {
	Identity Identity
	Profile  string
	// TTLSeconds is the session's lifetime; nil means the profile's default.
	TTLSeconds *int64
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

// AssumeAWS verifies the caller, decides assume on the profile, and asks
// STS for a session of the profile's role: RoleSessionName is the function,
// SourceIdentity the workload's role (so CloudTrail names it), with the
// profile's session policy and tags. Audited as event assume in the
// replay database.
func (b *Broker) AssumeAWS(ctx context.Context, in AssumeAWSInput) (out *api.AWSCredential, err error) {
	info := b.requestInfo(ctx)
	rec := newRecord(info, audit.EventAssume)
	rec.Database = b.cfg.ReplayDatabase // AWS sessions are audited in the state database
	rec.AWSProfile = callerText(in.Profile)
	defer func() { b.finish(ctx, info, rec, err, false) }()
	dbctx, cancel := b.dbDeadline(ctx)
	defer cancel()

	c, err := b.authenticate(dbctx, in.Identity, false)
	if err != nil {
		return nil, err
	}
	withCaller(&rec, c)
	prof := b.cfg.AWSProfiles[in.Profile]
	if prof == nil {
		return nil, notConfigured("AWS profile %q is not configured", in.Profile)
	}
	ttl := prof.DefaultTTL
	if in.TTLSeconds != nil {
		switch secs := *in.TTLSeconds; {
		case secs > int64(prof.MaxTTL/time.Second):
			return nil, api.Errorf(api.CodeTTLExceedsMax, "ttl_seconds %d exceeds the profile's max_ttl of %d", secs, int64(prof.MaxTTL/time.Second))
		case secs < 900:
			return nil, api.Errorf(api.CodeInvalidRequest, "ttl_seconds must be at least 900 (the STS minimum)")
		default:
			ttl = time.Duration(secs) * time.Second
		}
	}
	rec.TTLSeconds = int64(ttl / time.Second)
	preq := b.policyRequest(c, info, policy.ActionAssume, "", "", ttl)
	preq.Profile = prof.Name
	if err := b.decide(ctx, &rec, c, preq); err != nil {
		return nil, err
	}
	if b.assumer == nil {
		return nil, &api.Error{Code: api.CodeSTSUnavailable, Message: "the broker has no AWS credentials to assume roles with", RetryAfter: api.DefaultRetryAfter}
	}
	leaseID, err := lease.NewID()
	if err != nil {
		return nil, internal(err)
	}
	req := &sts.AssumeRoleInput{
		RoleArn:         aws.String(prof.RoleARN),
		RoleSessionName: aws.String(stsName(c.principal.Session)),
		SourceIdentity:  aws.String(stsName(c.principal.Role)),
		DurationSeconds: aws.Int32(int32(ttl / time.Second)),
	}
	if prof.SessionPolicy != "" {
		req.Policy = aws.String(prof.SessionPolicy)
	}
	for _, k := range slices.Sorted(maps.Keys(prof.SessionTags)) {
		req.Tags = append(req.Tags, ststypes.Tag{Key: aws.String(k), Value: aws.String(prof.SessionTags[k])})
	}
	rec.SourceIdentity, rec.LeaseID = *req.SourceIdentity, leaseID
	actx, cancelSTS := context.WithTimeout(ctx, 5*time.Second)
	defer cancelSTS()
	resp, err := b.assumer.AssumeRole(actx, req)
	if err != nil {
		msg := "STS did not issue the session"
		var ae smithy.APIError
		if errors.As(err, &ae) {
			msg += ": " + ae.ErrorCode() // codes only: messages may echo request data
		}
		return nil, &api.Error{Code: api.CodeSTSUnavailable, Message: msg, Cause: errors.New(msg), RetryAfter: api.DefaultRetryAfter}
	}
	cr := resp.Credentials
	if cr == nil || cr.AccessKeyId == nil || cr.SecretAccessKey == nil || cr.SessionToken == nil || cr.Expiration == nil {
		return nil, &api.Error{Code: api.CodeSTSUnavailable, Message: "STS answered without credentials", RetryAfter: api.DefaultRetryAfter}
	}
	return &api.AWSCredential{
		LeaseID: leaseID, AccessKeyID: *cr.AccessKeyId, SecretAccessKey: *cr.SecretAccessKey,
		SessionToken: *cr.SessionToken, Expiration: cr.Expiration.UTC(),
	}, nil
}
