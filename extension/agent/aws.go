package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
)

// AWSBroker is what the agent needs from the broker for AWS sessions;
// *brokerclient.Client implements it.
type AWSBroker interface {
	AssumeAWS(ctx context.Context, profile string, ttl time.Duration) (*brokerclient.AWSCredential, error)
}

var _ AWSBroker = (*brokerclient.Client)(nil)

// AWSCredential is a cached AWS session under its configured name. Printing it hides the
// secret access key and the session token (see brokerclient.AWSCredential).
type AWSCredential struct {
	Name string
	brokerclient.AWSCredential
}

type awsEntry struct {
	spec                             config.AWSProfile
	slot[brokerclient.AWSCredential] // ttl: the session duration asked for (or the broker's default)
}

// addAWS sets up the AWS entries of New.
func (a *Agent) addAWS(b Broker, profiles []config.AWSProfile) error {
	a.awsEntries = map[string]*awsEntry{}
	if len(profiles) == 0 {
		return nil
	}
	ab, ok := b.(AWSBroker)
	if !ok {
		return fmt.Errorf("agent: AWS profiles are configured but the broker (%T) cannot assume them", b)
	}
	a.awsBroker = ab
	for _, p := range profiles {
		if _, dup := a.entries[p.Name]; dup {
			return fmt.Errorf("agent: name %q is both a credential and an AWS profile", p.Name)
		}
		if _, dup := a.awsEntries[p.Name]; dup {
			return fmt.Errorf("agent: AWS profile %q is configured twice", p.Name)
		}
		e := &awsEntry{spec: p, slot: newSlot[brokerclient.AWSCredential](p.TTL)}
		a.awsEntries[p.Name] = e
		a.awsOrder = append(a.awsOrder, e)
	}
	return nil
}

// AWSNames returns the configured AWS profile names in order.
func (a *Agent) AWSNames() []string {
	names := make([]string, len(a.awsOrder))
	for i, e := range a.awsOrder {
		names[i] = e.spec.Name
	}
	return names
}

// GetAWS returns the AWS session called name, first replaced by a new one if less than
// its margin ([config.AWSMargin], at least 5 minutes) is left or if refresh is true.
// While INIT is running it waits for it as [Agent.Get] does; a session still missing
// after INIT (lazy mode) is fetched, at most FetchWait, and after a failed INIT in fail
// mode the read is held until ctx ends. When the broker cannot be reached it serves the
// cached session until its Expiration.
func (a *Agent) GetAWS(ctx context.Context, name string, refresh bool) (AWSCredential, error) {
	e := a.awsEntries[name]
	if e == nil {
		return AWSCredential{}, fmt.Errorf("%w: %q", ErrUnknown, name)
	}
	c, err := read(ctx, a, name, &e.slot, refresh,
		func(ctx context.Context, force bool) (*brokerclient.AWSCredential, error) {
			return a.refreshAWS(ctx, e, force, time.Time{})
		},
		func(cur *brokerclient.AWSCredential) bool { return a.awsDue(e, cur, a.opts.Clock(), time.Time{}) },
		func(cur *brokerclient.AWSCredential, err error) bool {
			if !a.opts.Clock().Before(cur.Expiration) {
				return false
			}
			a.opts.Logger.Warn("AWS session refresh failed; serving the cached session until it expires",
				"name", name, "access_key_id", cur.AccessKeyID, "expiration", cur.Expiration, "error", err.Error())
			return true
		})
	if err != nil {
		return AWSCredential{}, err
	}
	return AWSCredential{Name: name, AWSCredential: *c}, nil
}

// awsMargin is the refresh margin of e's sessions.
func (a *Agent) awsMargin(e *awsEntry) time.Duration {
	return config.AWSMargin(a.opts.RefreshMargin, e.leaseTTL())
}

// awsDue reports whether cur needs replacing at now: less than the margin left, or (with
// a deadline) expiring before deadline when a new session would last more than the
// margin longer.
func (a *Agent) awsDue(e *awsEntry, cur *brokerclient.AWSCredential, now, deadline time.Time) bool {
	m := a.awsMargin(e)
	if cur.Expiration.Sub(now) < m {
		return true
	}
	return !deadline.IsZero() && cur.Expiration.Before(deadline) && now.Add(e.leaseTTL()).After(cur.Expiration.Add(m))
}

// refreshAWS assumes a new session for e in a flight shared with concurrent callers (a
// forced refresh has its own flight, which always assumes); see [doFlight].
func (a *Agent) refreshAWS(ctx context.Context, e *awsEntry, force bool, deadline time.Time) (*brokerclient.AWSCredential, error) {
	key := "aws\x00" + e.spec.Name
	if force {
		key += "\x00new"
	}
	return doFlight(ctx, a, key, e.spec.Name, func(fctx context.Context) (*brokerclient.AWSCredential, error) {
		c, err := a.assume(fctx, e, force, deadline)
		e.setErr(err)
		return c, err
	})
}

func (a *Agent) assume(ctx context.Context, e *awsEntry, force bool, deadline time.Time) (*brokerclient.AWSCredential, error) {
	if cur := e.current(); !force && cur != nil && !a.awsDue(e, cur, a.opts.Clock(), deadline) {
		return cur, nil // a flight that just ended replaced it
	}
	log := a.opts.Logger.With("name", e.spec.Name, "profile", e.spec.Profile)
	c, err := a.awsBroker.AssumeAWS(ctx, e.spec.Profile, e.spec.TTL)
	if err != nil {
		log.Warn("assuming the AWS profile failed", "error", err.Error())
		return nil, err
	}
	if err := a.storeAWS(e, c); err != nil {
		return nil, err // shut down meanwhile; the session ends at its Expiration
	}
	// The access key id is an identifier (CloudTrail records it), not a secret.
	log.Info("AWS session issued", "lease_id", c.LeaseID, "access_key_id", c.AccessKeyID, "expiration", c.Expiration)
	return c, nil
}

// storeAWS caches c as e's session, replacing the current one (which stays valid at STS
// until its Expiration).
func (a *Agent) storeAWS(e *awsEntry, c *brokerclient.AWSCredential) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrClosed
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.cred = c
	if e.spec.TTL == 0 {
		e.ttl = c.Expiration.Sub(a.opts.Clock()).Round(time.Second)
	}
	return nil
}

// forgetAWS drops every cached session at shutdown. STS sessions cannot be revoked; they
// end at their Expiration.
func (a *Agent) forgetAWS() {
	n := 0
	for _, e := range a.awsOrder {
		e.mu.Lock()
		if e.cred != nil {
			n++
		}
		e.cred = nil
		e.mu.Unlock()
	}
	if n > 0 {
		a.opts.Logger.Info("AWS sessions forgotten; STS cannot revoke them, they end at their expiration", "sessions", n)
	}
}
