package lease

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// ErrRoleGone reports that the role to drop did not exist (it counts as revoked).
var ErrRoleGone = errors.New("lease: role already gone")

// dropRole removes username inside tx, the way DESIGN §7 requires:
// objects it owns go to reassignTo (REASSIGN OWNED) and what remains of it
// in this database goes (DROP OWNED), then the role. Sessions must already
// be terminated. When the role owns nothing and holds no privileges (the
// common case) it is a single DROP ROLE.
//
// REASSIGN/DROP OWNED need the privileges of both roles; the admin role
// borrows the memberships inside the transaction and gives them back before
// it commits, so it holds no standing access to application data.
func dropRole(ctx context.Context, tx pgx.Tx, username, reassignTo string) error {
	user, err := pgrole.QuoteIdentifier(username)
	if err != nil {
		return err
	}
	var exists, dependent bool
	err = tx.QueryRow(ctx, `SELECT r.oid IS NOT NULL,
		EXISTS (SELECT 1 FROM pg_shdepend d WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid
			AND d.dbid IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())))
		FROM (SELECT (SELECT oid FROM pg_roles WHERE rolname = $1) AS oid) r`, username).Scan(&exists, &dependent)
	if err != nil {
		return fmt.Errorf("inspect role: %w", err)
	}
	if !exists {
		return ErrRoleGone
	}
	if dependent {
		if err := dropOwned(ctx, tx, username, user, reassignTo); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, "DROP ROLE IF EXISTS "+user); err != nil {
		return fmt.Errorf("drop role: %w", redactPgError(err))
	}
	return nil
}

func dropOwned(ctx context.Context, tx pgx.Tx, username, user, reassignTo string) error {
	var borrowed []string
	borrow := func(role string) error {
		var has bool
		if err := tx.QueryRow(ctx, "SELECT pg_has_role(current_user, $1, 'USAGE')", role).Scan(&has); err != nil {
			return fmt.Errorf("check membership: %w", err)
		}
		if has {
			return nil
		}
		ident, err := pgrole.QuoteIdentifier(role)
		if err != nil {
			return err
		}
		// Several reapers may borrow the same group at once.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", "ephemera.borrow/"+role); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, "GRANT "+ident+" TO CURRENT_USER"); err != nil {
			return fmt.Errorf("borrow membership: %w", redactPgError(err))
		}
		borrowed = append(borrowed, ident)
		return nil
	}
	if err := borrow(username); err != nil {
		return err
	}
	if reassignTo != "" {
		if err := borrow(reassignTo); err != nil {
			return err
		}
		target, err := pgrole.QuoteIdentifier(reassignTo)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "REASSIGN OWNED BY "+user+" TO "+target); err != nil {
			return fmt.Errorf("reassign owned: %w", redactPgError(err))
		}
	}
	if _, err := tx.Exec(ctx, "DROP OWNED BY "+user); err != nil {
		return fmt.Errorf("drop owned: %w", redactPgError(err))
	}
	for _, ident := range borrowed {
		if ident == user {
			continue // goes with the role
		}
		if _, err := tx.Exec(ctx, "REVOKE "+ident+" FROM CURRENT_USER"); err != nil {
			return fmt.Errorf("return membership: %w", redactPgError(err))
		}
	}
	return nil
}

// firstGroup is where a lease's objects are reassigned: its first member_of.
func firstGroup(memberOf []string) string {
	if len(memberOf) == 0 {
		return ""
	}
	return memberOf[0]
}
