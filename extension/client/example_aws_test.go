package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/ephemera-sh/ephemera/extension/client"
)

// A function whose extension has EPHEMERA_AWS_PROFILES=reports=reports-read:30m calls AWS
// as the reports-read role. Build the config once, at init; the SDK asks the extension for
// a new session 5 minutes before the current one expires.
func ExampleAWSConfig() {
	ctx := context.Background()
	cfg, err := client.AWSConfig(ctx, "reports")
	if err != nil {
		log.Fatal(err)
	}
	out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(aws.ToString(out.Arn)) // arn:aws:sts::123456789012:assumed-role/reports-read/<function name>
}
