package broker_test

import (
	"testing"

	"github.com/ephemera-sh/ephemera/broker/api/apitest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// TestContract runs the broker API's contract suite against the real
// handler; the extension's test double runs the same cases, so the two
// can never drift apart.
func TestContract(t *testing.T) {
	apitest.Run(t, func(t *testing.T) apitest.Target {
		e := newEnv(t, envOptions{})
		return apitest.Target{
			URL:         e.srv.URL,
			Prove:       apitest.STSProver(e.sts, account, region, audience),
			Database:    "orders",
			Role:        "readonly",
			AllowedRole: "orders-api-contract",
			DeniedRole:  "billing-api-contract",
			FailNext:    func(testing.TB) { e.sts.SetMode(stsserver.ModeUnavailable) },
		}
	})
}
