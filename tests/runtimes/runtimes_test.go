package runtimes

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestOrdersAndAWSIdentity: for each runtime, the demo function reads a credential and
// queries the orders as an ephemeral user; its STS client, built by the helper, reaches
// the STS emulator signed by the AWS profile's assumed role (a session minted for this
// function), and not one of the function's own AWS calls is signed by the execution role,
// although Lambda gives the function that role's keys in AWS_ACCESS_KEY_ID & co. When the
// database ends the function's session, the next query still succeeds, on a new session.
// No secret reaches a log.
func TestOrdersAndAWSIdentity(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			sb := startSandbox(t, rt, "ident", "orders=orders/readonly:15m")
			wantARN := "arn:aws:sts::123456789012:assumed-role/reports-read/" + sb.function

			a := sb.invoke(t)
			if !a.ok() {
				t.Fatalf("first invocation: %+v", a)
			}
			if a.AWSARN != wantARN || a.AWSARN == sb.id.ARN {
				t.Fatalf("the function's AWS identity is %q, want the profile's role %q (execution role %q)", a.AWSARN, wantARN, sb.id.ARN)
			}
			ses, ok := sessionOf(a.AWSAccessKeyID)
			if !ok || ses.RoleARN != reportsRole || ses.RoleSessionName != sb.function {
				t.Fatalf("the function signed with %s, which is no reports-read session of %s (%+v)", a.AWSAccessKeyID, sb.function, ses)
			}
			keys := callerKeys()
			if !slices.Contains(keys, a.AWSAccessKeyID) {
				t.Fatalf("STS saw no GetCallerIdentity signed with the session %s (saw %v)", a.AWSAccessKeyID, keys)
			}
			if slices.Contains(keys, sb.id.AccessKeyID) {
				t.Fatalf("STS saw a GetCallerIdentity signed with the execution role's key %s", sb.id.AccessKeyID)
			}

			// The next invocation reuses the connection and the cached AWS session.
			b := sb.invoke(t)
			if !b.ok() || b.CurrentUser != a.CurrentUser || b.AWSAccessKeyID != a.AWSAccessKeyID || b.AWSARN != wantARN {
				t.Fatalf("second invocation: %+v, first %+v", b, a)
			}

			// The database ends the function's session (as the reaper does to expired users):
			// the helper runs the query again on a new session.
			ctx := context.Background()
			pids := backends(t, a.CurrentUser)
			if len(pids) != 1 {
				t.Fatalf("%d sessions of %s, want the helper's one connection", len(pids), a.CurrentUser)
			}
			var ended bool // pg_terminate_backend with a timeout waits until the session is gone
			if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1, 30000)`, pids[0]).Scan(&ended); err != nil || !ended {
				t.Fatalf("ending session %d: %v %v", pids[0], ended, err)
			}
			c := sb.invoke(t)
			if !c.ok() || c.CurrentUser != a.CurrentUser {
				t.Fatalf("invocation after the session was ended: %+v", c)
			}
			if now := backends(t, a.CurrentUser); len(now) != 1 || now[0] == pids[0] {
				t.Fatalf("sessions of %s after the termination: %v (ended: %d)", a.CurrentUser, now, pids[0])
			}
			sb.shutdown(t)
		})
	}
}

// backends returns the pids of the sessions of user.
func backends(t *testing.T, user string) []int32 {
	t.Helper()
	rows, err := admin.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE usename = $1 ORDER BY pid`, user)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pids []int32
	for rows.Next() {
		var pid int32
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return pids
}

// TestRotationAndFreeze: for each runtime, with 6 s leases on a role whose max_ttl is 12 s
// and the reaper ending the sessions of expired users every second, the sandbox sleeps
// frozen short of the refresh point, past it, past the credential's TTL and past its
// max_ttl; every invocation after a thaw reads the orders, and the function moves to new
// users as the extension rotates them (at least three generations: users or renewed
// expiries, and at least two users).
func TestRotationAndFreeze(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			sb := startSandbox(t, rt, "rotate", fmt.Sprintf("orders=orders/rotating:%ds", int(rotatingTTL/time.Second)))
			users, generations := map[string]bool{}, map[string]bool{}
			record := func(a answer, after string) {
				t.Helper()
				if !a.ok() {
					t.Fatalf("invocation %s: %+v", after, a)
				}
				users[a.CurrentUser] = true
				generations[a.CurrentUser+" "+a.LeaseExpiresAt.String()] = true
			}
			prev := sb.invoke(t)
			record(prev, "after INIT")
			for _, frozen := range []time.Duration{
				2 * time.Second,                // short of the refresh point
				4 * time.Second,                // past it: a renewal, or a new user near max_ttl
				rotatingTTL + 2*time.Second,    // past the TTL: the old user expired, its sessions end
				3 * time.Second,                // within the new user's TTL
				rotatingMaxTTL + 1*time.Second, // past max_ttl
				500 * time.Millisecond,         // back to back
			} {
				if !sb.emu.Frozen() {
					t.Fatal("the sandbox is not frozen between invocations")
				}
				time.Sleep(frozen)
				a := sb.invoke(t)
				record(a, "after "+frozen.String()+" frozen")
				// An expired lease cannot be renewed: past the TTL the function must have
				// moved to a new user.
				if frozen > rotatingTTL && a.CurrentUser == prev.CurrentUser {
					t.Fatalf("after %v frozen the function still used %s, whose lease expired at %v", frozen, a.CurrentUser, prev.LeaseExpiresAt)
				}
				prev = a
			}
			if len(users) < 2 || len(generations) < 3 {
				t.Fatalf("the function saw %d users and %d generations, want at least 2 and 3", len(users), len(generations))
			}
			t.Logf("%s: 7 invocations, %d users, %d generations", rt.name, len(users), len(generations))
			sb.shutdown(t)
		})
	}
}
