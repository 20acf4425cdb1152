package agent

import (
	"context"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
)

// dbKind is a database credential: renewed while its lease allows, else issued anew;
// revoked at shutdown.
type dbKind struct {
	a    *Agent
	spec config.Credential
}

var _ kind[api.Credential] = dbKind{}

func (dbKind) expiry(c *api.Credential) time.Time { return c.ExpiresAt }

func (k dbKind) margin(ttl time.Duration) time.Duration {
	return config.Margin(k.a.opts.RefreshMargin, ttl)
}

func (dbKind) lease(c *api.Credential) string { return c.LeaseID }

func (dbKind) ttlOf(c *api.Credential, _ time.Time) time.Duration { return c.ExpiresAt.Sub(c.IssuedAt) }

func (dbKind) describe(c *api.Credential) []any {
	return []any{"lease_id", c.LeaseID, "expires_at", c.ExpiresAt}
}

// renewable reports whether renewing cur is worth it: the lease is live and renewable,
// and its max_expires_at is at least twice the margin away (and, with a deadline beyond
// max_expires_at, not sooner than a new credential would last).
func (k dbKind) renewable(s *slot[api.Credential], cur *api.Credential, now, deadline time.Time) bool {
	if !cur.Renewable || !now.Before(cur.ExpiresAt) || cur.MaxExpiresAt.Sub(now) < 2*s.margin() {
		return false
	}
	return deadline.IsZero() || !cur.MaxExpiresAt.Before(deadline) || !now.Add(s.leaseTTL()).After(cur.MaxExpiresAt)
}

// obtain renews cur when that is worth it and the broker agrees, and issues a new
// credential otherwise (or when a renewal capped by max_expires_at is still due).
func (k dbKind) obtain(ctx context.Context, s *slot[api.Credential], cur *api.Credential, force bool, deadline time.Time) (*api.Credential, error) {
	a := k.a
	now := a.opts.Clock()
	log := a.opts.Logger.With("name", k.spec.Name)
	if !force && cur != nil && k.renewable(s, cur, now, deadline) {
		l, err := a.broker.Renew(ctx, cur.LeaseID, k.spec.TTL)
		switch {
		case err == nil:
			renewed := *cur
			renewed.ExpiresAt = l.ExpiresAt
			if !l.MaxExpiresAt.IsZero() {
				renewed.MaxExpiresAt = l.MaxExpiresAt
			}
			renewed.Renewable = renewed.ExpiresAt.Before(renewed.MaxExpiresAt)
			if err := s.store(&renewed, false); err != nil {
				return nil, err
			}
			log.Info("lease renewed", "lease_id", renewed.LeaseID, "username", renewed.Username, "expires_at", renewed.ExpiresAt)
			if !s.due(&renewed, a.opts.Clock(), deadline) {
				return &renewed, nil
			}
			log.Info("renewal capped by max_expires_at; issuing a new credential", "lease_id", renewed.LeaseID)
		case brokerclient.Retryable(err) || ctx.Err() != nil:
			return nil, err
		default:
			log.Info("renewal refused; issuing a new credential", "lease_id", cur.LeaseID,
				"code", string(api.CodeOf(err)), "status", brokerclient.StatusOf(err))
		}
	}
	c, err := a.broker.Issue(ctx, k.spec.Database, k.spec.Role, k.spec.TTL)
	if err != nil {
		log.Warn("issue failed", "database", k.spec.Database, "role", k.spec.Role, "error", err.Error())
		return nil, err
	}
	if err := s.store(c, true); err != nil {
		// Shut down meanwhile: the lease is not kept; give it back.
		rctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = a.broker.Revoke(rctx, c.LeaseID)
		cancel()
		return nil, err
	}
	log.Info("credential issued", "lease_id", c.LeaseID, "username", c.Username, "expires_at", c.ExpiresAt,
		"max_expires_at", c.MaxExpiresAt)
	return c, nil
}

// awsKind is an AWS session: STS cannot renew or revoke one, so every refresh assumes
// the role anew, and shutdown only forgets it.
type awsKind struct {
	a    *Agent
	spec config.AWSProfile
}

var _ kind[api.AWSCredential] = awsKind{}

func (awsKind) expiry(c *api.AWSCredential) time.Time { return c.Expiration }

func (k awsKind) margin(ttl time.Duration) time.Duration {
	return config.AWSMargin(k.a.opts.RefreshMargin, ttl)
}

func (awsKind) lease(*api.AWSCredential) string { return "" }

func (awsKind) ttlOf(c *api.AWSCredential, now time.Time) time.Duration {
	return c.Expiration.Sub(now).Round(time.Second)
}

// describe names the session by its access key id, an identifier (CloudTrail records
// it), not a secret.
func (awsKind) describe(c *api.AWSCredential) []any {
	return []any{"access_key_id", c.AccessKeyID, "expiration", c.Expiration}
}

func (k awsKind) obtain(ctx context.Context, s *slot[api.AWSCredential], _ *api.AWSCredential, _ bool, _ time.Time) (*api.AWSCredential, error) {
	log := k.a.opts.Logger.With("name", k.spec.Name, "profile", k.spec.Profile)
	c, err := k.a.awsBroker.AssumeAWS(ctx, k.spec.Profile, k.spec.TTL)
	if err != nil {
		log.Warn("assuming the AWS profile failed", "error", err.Error())
		return nil, err
	}
	if err := s.store(c, true); err != nil {
		return nil, err // shut down meanwhile; the session ends at its Expiration
	}
	log.Info("AWS session issued", "lease_id", c.LeaseID, "access_key_id", c.AccessKeyID, "expiration", c.Expiration)
	return c, nil
}
