package stack

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// The broker's own AWS identity: a session of BrokerRole, as a broker
// running in Lambda has its execution role's.
const (
	BrokerRole    = "ephemera-broker"
	BrokerSession = "broker"
)

// AWSProfile is an AWS role whose sessions workloads get through the broker
// (POST /v1/aws-credentials): aws_profiles.<Name> in the broker's YAML, and
// a role at the STS emulator that trusts BrokerRole.
type AWSProfile struct {
	// Name is the profile's name, as workloads and policies name it
	// (Ephemera::AwsProfile::"<Name>").
	Name string
	// RoleARN is the role the broker assumes; default RoleARN(Name).
	RoleARN string
	// DefaultTTL and MaxTTL are the profile's default_ttl and max_ttl
	// (whole seconds from 15m to 12h); zero leaves the broker's defaults
	// (15m and 1h). The role's MaxSessionDuration at STS is MaxTTL, and
	// at least an hour.
	DefaultTTL, MaxTTL time.Duration
}

func (p AWSProfile) roleARN() string {
	if p.RoleARN != "" {
		return p.RoleARN
	}
	return RoleARN(p.Name)
}

// validate checks the AWS options before anything starts.
func validate(opts Options) error {
	if _, err := profilesYAML(opts.Config, opts.AWSProfiles); err != nil {
		return err
	}
	for _, p := range opts.AWSProfiles {
		if arn := p.roleARN(); !roleARNRE.MatchString(arn) {
			return fmt.Errorf("stack: AWS profile %q: %q is not an IAM role ARN", p.Name, arn)
		}
	}
	for _, r := range opts.Roles {
		if !roleARNRE.MatchString(r.ARN) {
			return fmt.Errorf("stack: role %q is not an IAM role ARN", r.ARN)
		}
	}
	return nil
}

// addRoles registers the broker's identity, the roles of the profiles and
// opts.Roles (checked by validate) with the STS emulator.
func (s *Stack) addRoles(opts Options) {
	s.BrokerIdentity = stsserver.NewIdentity(Account, BrokerRole, BrokerSession)
	s.STS.Add(s.BrokerIdentity)
	for _, p := range opts.AWSProfiles {
		s.STS.AddRole(stsserver.Role{ARN: p.roleARN(), TrustedPrincipals: []string{RoleARN(BrokerRole)}, MaxSessionDuration: max(p.MaxTTL, time.Hour)})
	}
	for _, r := range opts.Roles {
		s.STS.AddRole(r)
	}
}

// roleARNRE is what stsserver.AddRole accepts without panicking.
var roleARNRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::\d{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]+$`)

// profilesYAML is the aws_profiles section for profiles, to append to yaml.
func profilesYAML(yaml string, profiles []AWSProfile) (string, error) {
	if len(profiles) == 0 {
		return "", nil
	}
	if regexp.MustCompile(`(?m)^aws_profiles\s*:`).MatchString(yaml) {
		return "", fmt.Errorf("stack: Options.Config has aws_profiles of its own and Options.AWSProfiles is set: use one")
	}
	var b strings.Builder
	b.WriteString("\naws_profiles:\n")
	for _, p := range profiles {
		fmt.Fprintf(&b, "  %q:\n    role_arn: %q\n", p.Name, p.roleARN())
		if p.DefaultTTL != 0 {
			fmt.Fprintf(&b, "    default_ttl: %s\n", p.DefaultTTL)
		}
		if p.MaxTTL != 0 {
			fmt.Fprintf(&b, "    max_ttl: %s\n", p.MaxTTL)
		}
	}
	return b.String(), nil
}
