package config_test

import (
	"fmt"
	"log"
	"time"

	"github.com/ephemera-sh/ephemera/extension/config"
)

// The extension reads its environment once; here a map stands in for os.Getenv.
func ExampleParse() {
	env := map[string]string{
		"EPHEMERA_BROKER_URL":      "https://abc123.execute-api.eu-west-1.amazonaws.com",
		"EPHEMERA_AUDIENCE":        "prod-orders",
		"EPHEMERA_CREDENTIALS":     "orders=orders/readonly:15m,reports=orders/reporting",
		"EPHEMERA_ON_INIT_FAILURE": "lazy",
		"AWS_ACCESS_KEY_ID":        "ASIAEXAMPLE",
		"AWS_SECRET_ACCESS_KEY":    "example-secret",
		"AWS_SESSION_TOKEN":        "example-token",
		"AWS_REGION":               "eu-west-1",
	}
	cfg, err := config.Parse(func(k string) string { return env[k] })
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range cfg.Credentials {
		fmt.Printf("%s: %s/%s ttl=%v\n", c.Name, c.Database, c.Role, c.TTL)
	}
	fmt.Println(cfg.Port, cfg.InitTimeout, cfg.OnInitFailure, cfg.STSRegion)
	fmt.Println("margin for a 15m lease:", cfg.Margin(15*time.Minute))
	// Output:
	// orders: orders/readonly ttl=15m0s
	// reports: orders/reporting ttl=0s
	// 7411 5s lazy eu-west-1
	// margin for a 15m lease: 3m0s
}

// Every bad variable is reported, each by name.
func ExampleParse_errors() {
	env := map[string]string{"EPHEMERA_PORT": "http", "EPHEMERA_CREDENTIALS": "orders"}
	_, err := config.Parse(func(k string) string { return env[k] })
	fmt.Println(err)
	// Output:
	// config: EPHEMERA_BROKER_URL: required (the broker API's base URL)
	// config: EPHEMERA_AUDIENCE: required (must equal the broker's audience)
	// config: EPHEMERA_CREDENTIALS: entry 1 ("orders"): want name=database/role[:ttl]
	// config: EPHEMERA_PORT: "http" is not a port number (1-65535)
	// config: AWS_ACCESS_KEY_ID: required (the execution role's credentials sign identity proofs)
	// config: AWS_SECRET_ACCESS_KEY: required (the execution role's credentials sign identity proofs)
	// config: AWS_SESSION_TOKEN: required (it is also the token of the local API)
	// config: AWS_REGION: required (SigV4 region of the broker API)
}

// AWS sessions only: EPHEMERA_CREDENTIALS may be left out when EPHEMERA_AWS_PROFILES is set.
func ExampleParse_awsProfiles() {
	env := map[string]string{
		"EPHEMERA_BROKER_URL":   "https://abc123.execute-api.eu-west-1.amazonaws.com",
		"EPHEMERA_AUDIENCE":     "prod-reports",
		"EPHEMERA_AWS_PROFILES": "reports=reports-read:30m,archive=archive-write",
		"AWS_ACCESS_KEY_ID":     "ASIAEXAMPLE",
		"AWS_SECRET_ACCESS_KEY": "example-secret",
		"AWS_SESSION_TOKEN":     "example-token",
		"AWS_REGION":            "eu-west-1",
	}
	cfg, err := config.Parse(func(k string) string { return env[k] })
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range cfg.AWSProfiles {
		fmt.Printf("%s: profile %s ttl=%v margin=%v\n", p.Name, p.Profile, p.TTL, config.AWSMargin(cfg.RefreshMargin, p.TTL))
	}
	// Output:
	// reports: profile reports-read ttl=30m0s margin=5m0s
	// archive: profile archive-write ttl=0s margin=5m0s
}
