package broker

import (
	"errors"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/broker/lease"
)

// The use cases return *api.Error: callers classify with
// errors.Is(err, api.ErrLeaseRevoked) or read api.CodeOf(err). Every
// failure of PostgreSQL to answer (down, starting, saturated, terminated,
// past the request's deadline) is database_unavailable, never internal.

// fromVerify maps a proof verification error to an API error.
func fromVerify(err error) error {
	var ae *attest.Error
	if errors.As(err, &ae) {
		code := api.Code(ae.Code)
		// The nonce step's store failure: the database, not the proof.
		if code == api.CodeInternal && lease.Unavailable(err) {
			return unavailable(err)
		}
		return &api.Error{Code: code, Message: ae.Message, Cause: err}
	}
	if lease.Unavailable(err) {
		return unavailable(err)
	}
	return api.Wrap(api.CodeInternal, err, "identity verification failed")
}

// fromStore maps a lease store error to an API error.
func fromStore(err error) error {
	switch {
	case err == nil:
		return nil
	case api.CodeOf(err) != "":
		return err
	case errors.Is(err, lease.ErrNotFound):
		return api.Wrap(api.CodeNotFound, err, "no such lease")
	case errors.Is(err, lease.ErrExpired):
		return api.Wrap(api.CodeLeaseExpired, err, "the lease has expired")
	case errors.Is(err, lease.ErrRevoked):
		return api.Wrap(api.CodeLeaseRevoked, err, "the lease was revoked")
	case errors.Is(err, lease.ErrReplayed):
		return &api.Error{Code: api.CodeReplayedProof, Message: "proof was already used", Cause: err}
	case errors.Is(err, lease.ErrLimit):
		return &api.Error{Code: api.CodeLeaseLimit, Message: "the role has reached max_leases", Cause: err, RetryAfter: 5 * time.Second}
	case lease.Unavailable(err):
		return unavailable(err)
	}
	return api.Wrap(api.CodeInternal, err, "internal error")
}

func unavailable(err error) error {
	return &api.Error{Code: api.CodeDatabaseUnavailable, Message: "the database is unavailable; retry later",
		Cause: err, RetryAfter: api.DefaultRetryAfter}
}

func internal(err error) error { return api.Wrap(api.CodeInternal, err, "internal error") }
