package attest

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// PrincipalKind tells what kind of AWS identity a principal is.
type PrincipalKind string

// The kinds of principal. The zero value is KindRole, so that a Principal
// built before kinds existed still means an IAM role.
const (
	// KindRole is an IAM role, seen through one of its sessions (a Lambda
	// execution role is one). Its canonical ARN is arn:<p>:iam::<acct>:role/<name>.
	KindRole PrincipalKind = ""
	// KindUser is an IAM user, accepted only with Config.AllowIAMUsers. Its
	// canonical ARN is arn:<p>:iam::<acct>:user/<name>. A user is never
	// treated as a role: policies and leases keep the two apart.
	KindUser PrincipalKind = "user"
)

// String returns "role" or "user".
func (k PrincipalKind) String() string {
	if k == KindRole {
		return "role"
	}
	return string(k)
}

// ErrPrincipalARN is wrapped by every error of [ParsePrincipalARN],
// [CanonicalRoleARN] and [CanonicalPrincipalARN].
var ErrPrincipalARN = errors.New("attest: invalid principal ARN")

// PrincipalARN is a parsed IAM role, assumed-role or IAM user ARN.
type PrincipalARN struct {
	// Partition is aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-iso-e,
	// aws-iso-f or aws-eusc.
	Partition string
	// Account is the 12-digit account id.
	Account string
	// Kind is KindRole for role and assumed-role ARNs, KindUser for users.
	Kind PrincipalKind
	// Name is the role or user name (IAM's charset [A-Za-z0-9_+=,.@-], 1 to
	// 64 characters).
	Name string
	// Session is the role session name of an assumed-role ARN, else "".
	Session string
}

// Canonical returns the path-less ARN that names the principal wherever
// ephemera records one (policies, leases, audit): arn:<p>:iam::<acct>:role/<name>
// or arn:<p>:iam::<acct>:user/<name>.
func (a PrincipalARN) Canonical() string {
	kind := "role"
	if a.Kind == KindUser {
		kind = "user"
	}
	return "arn:" + a.Partition + ":iam::" + a.Account + ":" + kind + "/" + a.Name
}

var (
	partitionRE = regexp.MustCompile(`^(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc)$`)
	accountRE   = regexp.MustCompile(`^[0-9]{12}$`)
	iamNameRE   = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)
	sessionRE   = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
	// iamPathRE is the inside of an IAM path (between the first and the last
	// "/"): printable ASCII without spaces, at most 510 characters.
	iamPathRE = regexp.MustCompile(`^[\x21-\x7e]{1,510}$`)
)

// ParsePrincipalARN parses the ARN of an IAM role, a role session or an IAM
// user. It accepts exactly these forms and nothing around them (no spaces):
//
//	arn:<p>:iam::<acct>:role/<name>
//	arn:<p>:iam::<acct>:role/<path>/<name>
//	arn:<p>:sts::<acct>:assumed-role/<name>/<session>
//	arn:<p>:iam::<acct>:user/<name>
//	arn:<p>:iam::<acct>:user/<path>/<name>
//
// Every error wraps [ErrPrincipalARN] and quotes at most 64 bytes of s.
func ParsePrincipalARN(s string) (PrincipalARN, error) {
	bad := func(why string) (PrincipalARN, error) {
		return PrincipalARN{}, fmt.Errorf("%w %q: %s", ErrPrincipalARN, clip(s), why)
	}
	if s == "" {
		return PrincipalARN{}, fmt.Errorf("%w: empty", ErrPrincipalARN)
	}
	if strings.TrimSpace(s) != s {
		return bad("leading or trailing space")
	}
	parts := strings.SplitN(s, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return bad("not an ARN (want arn:<partition>:<service>::<account>:<resource>)")
	}
	a := PrincipalARN{Partition: parts[1], Account: parts[4]}
	service, region, resource := parts[2], parts[3], parts[5]
	if !partitionRE.MatchString(a.Partition) {
		return bad("unknown partition")
	}
	if region != "" {
		return bad("IAM and STS principal ARNs have no region")
	}
	if !accountRE.MatchString(a.Account) {
		return bad("account must be 12 digits")
	}
	typ, rest, _ := strings.Cut(resource, "/")
	switch {
	case service == "sts" && typ == "assumed-role":
		name, session, ok := strings.Cut(rest, "/")
		if !ok {
			return bad("an assumed-role ARN ends in /<role>/<session>")
		}
		if !iamNameRE.MatchString(name) {
			return bad("role name must be 1 to 64 of A-Z a-z 0-9 _+=,.@-")
		}
		if !sessionRE.MatchString(session) {
			return bad("session name must be 2 to 64 of A-Z a-z 0-9 _+=,.@-")
		}
		a.Kind, a.Name, a.Session = KindRole, name, session
		return a, nil
	case service == "iam" && (typ == "role" || typ == "user"):
		name := rest
		if i := strings.LastIndexByte(rest, '/'); i >= 0 {
			name = rest[i+1:]
			if path := rest[:i]; !iamPathRE.MatchString(path) || strings.HasPrefix(path, "/") ||
				strings.HasSuffix(path, "/") || strings.Contains(path, "//") {
				return bad("IAM path must be printable ASCII without spaces or empty segments")
			}
		}
		if !iamNameRE.MatchString(name) {
			return bad(typ + " name must be 1 to 64 of A-Z a-z 0-9 _+=,.@-")
		}
		a.Kind, a.Name = KindRole, name
		if typ == "user" {
			a.Kind = KindUser
		}
		return a, nil
	case service != "iam" && service != "sts":
		return bad("service must be iam or sts")
	}
	return bad("not a role, assumed-role or user ARN")
}

// CanonicalRoleARN turns the ARN of an IAM role — canonical, with a path,
// or one of its sessions (assumed-role) — into the canonical, path-less role
// ARN arn:<p>:iam::<acct>:role/<name> that leases and policies name. It is
// how an incident responder's principal_arn is read: whatever form was
// copied from a console or a log, the same role comes out. Anything else,
// IAM users included, is an error wrapping [ErrPrincipalARN].
func CanonicalRoleARN(s string) (string, error) {
	return CanonicalPrincipalARN(s, false)
}

// CanonicalPrincipalARN is [CanonicalRoleARN] that also accepts IAM user
// ARNs (with or without a path) when allowIAMUsers is true, returning the
// path-less arn:<p>:iam::<acct>:user/<name>: brokers configured with
// allow_iam_users hold leases for users too.
func CanonicalPrincipalARN(s string, allowIAMUsers bool) (string, error) {
	a, err := ParsePrincipalARN(s)
	if err != nil {
		return "", err
	}
	if a.Kind == KindUser && !allowIAMUsers {
		return "", fmt.Errorf("%w %q: an IAM user, not a role (IAM users are accepted only with allow_iam_users)", ErrPrincipalARN, clip(s))
	}
	return a.Canonical(), nil
}
