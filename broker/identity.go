package broker

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/internal/trace"
)

// Identity is who asks for a use case: a workload's proof, verified with
// STS on every request, or an operator of the CLI.
type Identity struct {
	proof    *api.Proof
	operator string
}

// Proof is the identity of an API caller: the signed, unsent STS request
// it sent. It is verified (and its nonce spent) by the use case.
func Proof(p *api.Proof) Identity { return Identity{proof: p} }

// Operator is the identity of a person at the operator CLI, which holds
// the admin's database login and so already has every power a revocation
// needs: no policy is consulted, and the audit trail records
// "operator:<name>" as the session. Only Revoke and AdminRevoke accept it;
// nothing that reaches the broker over the network can produce one.
func Operator(name string) Identity { return Identity{operator: name} }

// caller is a verified identity.
type caller struct {
	principal *attest.Principal // nil for an operator
	operator  string
}

// arn is the caller's canonical ARN for leases and decisions ("" for an
// operator).
func (c caller) arn() string {
	if c.principal == nil {
		return ""
	}
	return c.principal.RoleARN
}

// errOperatorNotAllowed refuses an operator identity where only a workload
// may act.
var errOperatorNotAllowed = api.Errorf(api.CodeInvalidRequest, "this operation needs a workload's proof")

// authenticate verifies who asks, spending a proof's nonce before STS is
// asked. A proof is verified inside a verify_identity trace subsegment
// (the STS call is its remote child).
func (b *Broker) authenticate(ctx context.Context, id Identity, operatorOK bool) (caller, error) {
	c, _, err := b.verifyIdentity(ctx, id, operatorOK, false)
	return c, err
}

// authenticateDeferred is authenticate for a workload whose proof's nonce
// the caller records itself (Issue records it with the credential): the
// nonce is only read here, and the returned PendingNonce must be recorded
// or spent on every path (settleNonce).
func (b *Broker) authenticateDeferred(ctx context.Context, id Identity) (caller, *attest.PendingNonce, error) {
	return b.verifyIdentity(ctx, id, false, true)
}

func (b *Broker) verifyIdentity(ctx context.Context, id Identity, operatorOK, deferNonce bool) (caller, *attest.PendingNonce, error) {
	if id.operator != "" {
		if !operatorOK {
			return caller{}, nil, errOperatorNotAllowed
		}
		if strings.TrimSpace(id.operator) == "" {
			return caller{}, nil, api.Errorf(api.CodeInvalidRequest, "the operator has no name")
		}
		return caller{operator: id.operator}, nil, nil
	}
	if b.verifier == nil {
		return caller{}, nil, api.Errorf(api.CodeInvalidRequest, "this broker accepts operators only (no proof verifier)")
	}
	ctx, end := trace.Start(ctx, "verify_identity")
	var p *attest.Principal
	var pending *attest.PendingNonce
	var err error
	if deferNonce {
		p, pending, err = b.verifier.VerifyDeferred(ctx, id.proof)
	} else {
		p, err = b.verifier.Verify(ctx, id.proof)
	}
	if err != nil {
		err = fromVerify(err)
		end(errors.New(string(api.CodeOf(err)))) // the code only: messages may quote caller input
		return caller{}, nil, err
	}
	end(nil)
	return caller{principal: p}, pending, nil
}

// settleNonce records a pending nonce that no transaction recorded: a proof
// that reached a decision (a denial, a refused TTL, a full role, an error
// after verification) is spent like one that got its credential, so the
// same proof cannot be tried again. It runs on a short budget of its own,
// detached from the request: a request that ended 503 because its caller
// went away, its deadline ran out on a lock or the pool was full leaves a
// replay database that still answers. Only when that database cannot be
// reached within settleTimeout does the proof stay usable, until it goes
// stale (5 minutes), and only for a request that again passes every check.
func (b *Broker) settleNonce(ctx context.Context, pn *attest.PendingNonce, outcome error) {
	if pn == nil || pn.Spent() {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := b.verifier.Spend(sctx, pn); err != nil && attest.CodeOf(err) != attest.CodeReplayedProof {
		b.log.Warn("could not record a proof's nonce after the request ended; it stays usable until it is stale",
			"outcome", string(api.CodeOf(outcome)), "err", err)
	}
}

// settleTimeout bounds settleNonce: the answer waits at most this long
// past the request's own deadline.
const settleTimeout = 250 * time.Millisecond
