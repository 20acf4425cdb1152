package localserver_test

import (
	"fmt"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/localserver"
)

// The "dsn" field quotes every value, so a password may hold any character.
func ExampleDSN() {
	fmt.Println(localserver.DSN(api.Credential{
		Host: "orders.cluster-abc.eu-west-1.rds.amazonaws.com", Port: 5432, DBName: "orders",
		Username: "eph_readonly_k3x9", Password: `it's\secret`, SSLMode: "verify-full",
	}))
	// Output:
	// host='orders.cluster-abc.eu-west-1.rds.amazonaws.com' port='5432' dbname='orders' user='eph_readonly_k3x9' password='it\'s\\secret' sslmode='verify-full'
}
