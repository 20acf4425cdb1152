package attest_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/ephemera-sh/ephemera/broker/attest"
)

func TestCanonicalRoleARN(t *testing.T) {
	const canon = "arn:aws:iam::123456789012:role/orders-api"
	long64 := strings.Repeat("r", 64)
	for _, tc := range []struct {
		in, want string
		errHas   string // non-empty: the error must say this
	}{
		{in: canon, want: canon},
		{in: "arn:aws:iam::123456789012:role/team/orders-api", want: canon},
		{in: "arn:aws:iam::123456789012:role/a/b/c/orders-api", want: canon},
		{in: "arn:aws:sts::123456789012:assumed-role/orders-api/orders-fn", want: canon},
		{in: "arn:aws-cn:iam::123456789012:role/x", want: "arn:aws-cn:iam::123456789012:role/x"},
		{in: "arn:aws-us-gov:sts::123456789012:assumed-role/R+=,.@-_9/s1", want: "arn:aws-us-gov:iam::123456789012:role/R+=,.@-_9"},
		{in: "arn:aws:iam::123456789012:role/" + long64, want: "arn:aws:iam::123456789012:role/" + long64},

		{in: "", errHas: "empty"},
		{in: " " + canon, errHas: "space"},
		{in: canon + " ", errHas: "space"},
		{in: canon + "\n", errHas: "space"},
		{in: "orders-api", errHas: "not an ARN"},
		{in: "arn:aws:iam::123456789012", errHas: "not an ARN"},
		{in: "ARN:aws:iam::123456789012:role/x", errHas: "not an ARN"},
		{in: "arn:aws:s3::123456789012:role/x", errHas: "service"},
		{in: "arn:aws:sts::123456789012:role/x", errHas: "not a role"},
		{in: "arn:aws:iam::123456789012:assumed-role/x/y", errHas: "not a role"},
		{in: "arn:aws:iam::123456789012:root", errHas: "not a role"},
		{in: "arn:aws:sts::123456789012:federated-user/bob", errHas: "not a role"},
		{in: "arn:aws:iam::123456789012:user/alice", errHas: "IAM user"},
		{in: "arn:aws:iam::123456789012:user/ops/alice", errHas: "IAM user"},
		{in: "arn:aws:iam::12345678901:role/x", errHas: "12 digits"},
		{in: "arn:aws:iam::1234567890123:role/x", errHas: "12 digits"},
		{in: "arn:aws:iam::12345678901a:role/x", errHas: "12 digits"},
		{in: "arn:aws:iam:::role/x", errHas: "12 digits"},
		{in: "arn:awz:iam::123456789012:role/x", errHas: "partition"},
		{in: "arn::iam::123456789012:role/x", errHas: "partition"},
		{in: "arn:aws:iam:us-east-1:123456789012:role/x", errHas: "region"},
		{in: "arn:aws:iam::123456789012:role/", errHas: "role name"},
		{in: "arn:aws:iam::123456789012:role/team/", errHas: "role name"},
		{in: "arn:aws:iam::123456789012:role/" + long64 + "r", errHas: "role name"},
		{in: "arn:aws:iam::123456789012:role/or ders", errHas: "role name"},
		{in: "arn:aws:iam::123456789012:role/orders*", errHas: "role name"},
		{in: "arn:aws:iam::123456789012:role/rôle", errHas: "role name"},
		{in: "arn:aws:iam::123456789012:role//x", errHas: "path"},
		{in: "arn:aws:iam::123456789012:role/a//x", errHas: "path"},
		{in: "arn:aws:iam::123456789012:role/a b/x", errHas: "path"},
		{in: "arn:aws:sts::123456789012:assumed-role/orders-api", errHas: "session"},
		{in: "arn:aws:sts::123456789012:assumed-role/orders-api/s", errHas: "session"},
		{in: "arn:aws:sts::123456789012:assumed-role/orders-api/a/b", errHas: "session"},
		{in: "arn:aws:sts::123456789012:assumed-role//fn", errHas: "role name"},
	} {
		got, err := attest.CanonicalRoleARN(tc.in)
		if tc.errHas == "" {
			if err != nil || got != tc.want {
				t.Errorf("CanonicalRoleARN(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("CanonicalRoleARN(%q) = %q; want an error", tc.in, got)
			continue
		}
		if !errors.Is(err, attest.ErrPrincipalARN) || !strings.Contains(err.Error(), tc.errHas) || got != "" {
			t.Errorf("CanonicalRoleARN(%q) = %q, %q; want an ErrPrincipalARN error saying %q", tc.in, got, err, tc.errHas)
		}
	}
}

func TestCanonicalPrincipalARNUsers(t *testing.T) {
	for in, want := range map[string]string{
		"arn:aws:iam::123456789012:user/alice":                      "arn:aws:iam::123456789012:user/alice",
		"arn:aws:iam::123456789012:user/ops/eu/alice":               "arn:aws:iam::123456789012:user/alice",
		"arn:aws:sts::123456789012:assumed-role/orders-api/fn-name": "arn:aws:iam::123456789012:role/orders-api",
	} {
		if got, err := attest.CanonicalPrincipalARN(in, true); err != nil || got != want {
			t.Errorf("CanonicalPrincipalARN(%q, true) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := attest.CanonicalPrincipalARN("arn:aws:iam::123456789012:user/alice", false); !errors.Is(err, attest.ErrPrincipalARN) {
		t.Errorf("a user without allowIAMUsers: %v", err)
	}
	a, err := attest.ParsePrincipalARN("arn:aws:sts::123456789012:assumed-role/orders-api/fn-name")
	if want := (attest.PrincipalARN{Partition: "aws", Account: "123456789012", Kind: attest.KindRole, Name: "orders-api", Session: "fn-name"}); err != nil || a != want {
		t.Errorf("ParsePrincipalARN = %+v, %v; want %+v", a, err, want)
	}
}

// FuzzCanonicalRoleARN: no input panics, errors wrap ErrPrincipalARN and
// quote at most 64 bytes of the input, and every result is canonical: it
// parses again, to itself.
func FuzzCanonicalRoleARN(f *testing.F) {
	for _, s := range []string{
		"arn:aws:iam::123456789012:role/orders-api",
		"arn:aws:iam::123456789012:role/team/orders-api",
		"arn:aws:sts::123456789012:assumed-role/orders-api/orders-fn",
		"arn:aws:iam::123456789012:user/ops/alice",
		"arn:aws-iso-b:iam::000000000000:role/a",
		"arn:aws:iam::123456789012:role//x",
		" arn:aws:iam::123456789012:role/x",
		"",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, users bool) {
		got, err := attest.CanonicalPrincipalARN(s, users)
		if err != nil {
			if got != "" || !errors.Is(err, attest.ErrPrincipalARN) {
				t.Fatalf("CanonicalPrincipalARN(%q) = %q, %v", s, got, err)
			}
			if len(s) > 200 && strings.Contains(err.Error(), s[:100]) {
				t.Fatalf("error echoes more than 64 bytes of the input: %q", err)
			}
			return
		}
		again, err := attest.CanonicalPrincipalARN(got, users)
		if err != nil || again != got {
			t.Fatalf("%q → %q → %q, %v: not canonical", s, got, again, err)
		}
		a, err := attest.ParsePrincipalARN(got)
		if err != nil || a.Session != "" || a.Canonical() != got || (a.Kind == attest.KindUser && !users) {
			t.Fatalf("%q → %q parses as %+v, %v", s, got, a, err)
		}
		if role, err := attest.CanonicalRoleARN(s); (err == nil) != (a.Kind == attest.KindRole) || (err == nil && role != got) {
			t.Fatalf("CanonicalRoleARN(%q) = %q, %v; CanonicalPrincipalARN gave %q", s, role, err, got)
		}
	})
}
