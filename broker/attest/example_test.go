package attest_test

import (
	"context"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/attest"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// nonceMap is a NonceStore for one process. The broker's real store is a
// PostgreSQL table shared by all its instances.
type nonceMap struct {
	mu   sync.Mutex
	used map[string]time.Time
}

func (m *nonceMap) UseNonce(_ context.Context, nonce string, expires time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.used[nonce]; ok {
		return false, nil
	}
	m.used[nonce] = expires
	return true, nil
}

// A workload signs a proof with its role's credentials; the broker verifies
// it by forwarding it to STS (here a local STS that checks the signature).
func Example() {
	ctx := context.Background()
	id := stsserver.NewIdentity("123456789012", "orders-api-role", "orders-fn")
	sts, err := stsserver.Start(id)
	if err != nil {
		log.Fatal(err)
	}
	defer sts.Close()

	// Extension side: sign, send nothing.
	creds := aws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken}
	proof, err := attest.Sign(ctx, creds, "us-east-1", "prod-orders", time.Now())
	if err != nil {
		log.Fatal(err)
	}

	// Broker side: check the proof, then ask STS who signed it.
	v, err := attest.NewVerifier(attest.Config{
		Audience: "prod-orders",
		Region:   "us-east-1",
		Endpoint: sts.URL(), // EPHEMERA_STS_ENDPOINT
		Nonces:   &nonceMap{used: map[string]time.Time{}},
	})
	if err != nil {
		log.Fatal(err)
	}
	principal, err := v.Verify(ctx, proof)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(principal.RoleARN)
	fmt.Println(principal.Session)

	// A proof is single-use.
	_, err = v.Verify(ctx, proof)
	fmt.Println(attest.CodeOf(err))
	// Output:
	// arn:aws:iam::123456789012:role/orders-api-role
	// orders-fn
	// replayed_proof
}

// An incident responder pastes whatever ARN a log showed; the broker
// revokes the leases of the role it names.
func ExampleCanonicalRoleARN() {
	for _, s := range []string{
		"arn:aws:sts::123456789012:assumed-role/orders-api/orders-fn",
		"arn:aws:iam::123456789012:role/team/orders-api",
		"arn:aws:iam::123456789012:user/alice",
	} {
		arn, err := attest.CanonicalRoleARN(s)
		fmt.Println(arn, err)
	}
	// Output:
	// arn:aws:iam::123456789012:role/orders-api <nil>
	// arn:aws:iam::123456789012:role/orders-api <nil>
	//  attest: invalid principal ARN "arn:aws:iam::123456789012:user/alice": an IAM user, not a role (IAM users are accepted only with allow_iam_users)
}
