package policy_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/ephemera-sh/ephemera/broker/policy"
)

func Example() {
	set, err := policy.Parse(map[string][]byte{
		"orders.cedar": []byte(`
@id("orders-api-reads-orders")
permit (principal, action == Ephemera::Action::"issue",
        resource == Ephemera::DatabaseRole::"orders/readonly")
when { principal.account == "123456789012" && principal.role like "orders-api-*"
       && context.ttl_seconds <= 900 };

@id("quarantine")
forbid (principal == Ephemera::Workload::"arn:aws:iam::123456789012:role/compromised", action, resource);
`),
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	req := policy.Request{
		Principal: policy.Principal{
			ARN:     "arn:aws:iam::123456789012:role/orders-api-role",
			Account: "123456789012",
			Role:    "orders-api-role",
			Session: "orders-api",
		},
		Action:     policy.ActionIssue,
		Database:   "orders",
		DBRole:     "readonly",
		TTLSeconds: 900,
		Now:        time.Date(2025, 3, 4, 10, 0, 0, 0, time.UTC),
		Stage:      "prod",
	}
	fmt.Printf("%+v\n", set.Decide(req))

	req.TTLSeconds = 3600
	fmt.Printf("%+v\n", set.Decide(req))

	_, err = policy.Parse(map[string][]byte{
		"bad.cedar": []byte(`permit (principal == User::"alice", action, resource);`),
	})
	fmt.Println(errors.Is(err, policy.ErrInvalid))
	// Output:
	// {Allowed:true Policies:[orders-api-reads-orders] Errors:[]}
	// {Allowed:false Policies:[] Errors:[]}
	// true
}
