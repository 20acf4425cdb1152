package brokertest_test

import (
	"net/http"
	"testing"

	"github.com/ephemera-sh/ephemera/broker/api/apitest"
	"github.com/ephemera-sh/ephemera/extension/internal/brokertest"
)

// The double passes the broker API's contract suite, the same cases the real broker's
// handler runs.
func TestContract(t *testing.T) {
	apitest.Run(t, func(t *testing.T) apitest.Target {
		b := brokertest.Start(t)
		b.SetGatewayAuth(false) // the suite signs its proofs, not its HTTP requests
		b.DenyRoles("compromised")
		return apitest.Target{
			URL:         b.URL(),
			Prove:       apitest.STSProver(b.STS(), brokertest.Account, brokertest.Region, brokertest.Audience),
			Database:    "orders",
			Role:        "readonly",
			AllowedRole: brokertest.RoleName,
			DeniedRole:  "compromised",
			FailNext:    func(testing.TB) { b.FailNext(1, http.StatusServiceUnavailable, "database_unavailable") },
		}
	})
}
