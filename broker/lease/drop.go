package lease

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/admindb"
	"github.com/ephemera-sh/ephemera/broker/pgrole"
)

// ErrRoleGone reports that the role to drop did not exist (it counts as revoked).
var ErrRoleGone = errors.New("lease: role already gone")

// A role is cluster-wide, and so is what it can leave behind: an ephemeral
// user may connect to any database where PUBLIC has CONNECT (template1 and
// postgres, by default) and own a table there, or set default privileges
// there. DROP ROLE fails (2BP01) while any database records such a
// dependency, so revocation goes to every database that pg_shdepend names.

// connector opens an admin connection to another database of the cluster.
type connector func(ctx context.Context, datname string) (*pgx.Conn, error)

// dropRole removes username inside tx: in every other database where the
// role owns objects or holds privileges, over an admin connection of its
// own, objects go to reassignTo (REASSIGN OWNED) and what remains goes
// (DROP OWNED), committed there; then the same in tx's database, and the
// role itself. Sessions must already be terminated and the login disabled.
// When the role owns nothing and holds no privileges (the common case) it
// is a single DROP ROLE.
//
// A database that cannot be reached fails the drop with an error that
// names it (recorded on the lease; the reaper retries).
//
// REASSIGN/DROP OWNED need the privileges of both roles; the admin role
// borrows the memberships inside the transaction and gives them back before
// it commits, so it holds no standing access to application data.
func (s *Store) dropRole(ctx context.Context, tx pgx.Tx, username, reassignTo string) error {
	return dropRoleVia(ctx, tx, s.connectOther, username, reassignTo)
}

// connectOther connects to datname with the admin pool's configuration
// (the same login, a fresh IAM token when the pool signs them), hardened.
func (s *Store) connectOther(ctx context.Context, datname string) (*pgx.Conn, error) {
	pc := s.pool.Config()
	cc := pc.ConnConfig
	cc.Database = datname
	if pc.BeforeConnect != nil {
		if err := pc.BeforeConnect(ctx, cc); err != nil {
			return nil, err
		}
	}
	admindb.Harden(cc)
	return pgx.ConnectConfig(ctx, cc)
}

func dropRoleVia(ctx context.Context, tx pgx.Tx, connect connector, username, reassignTo string) error {
	user, err := pgrole.QuoteIdentifier(username)
	if err != nil {
		return err
	}
	var exists, here bool
	var elsewhere []string
	err = tx.QueryRow(ctx, `WITH r AS (SELECT (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1) AS oid),
		here AS (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()),
		deps AS (SELECT d.dbid FROM pg_catalog.pg_shdepend d, r
			WHERE d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass AND d.refobjid = r.oid)
		SELECT r.oid IS NOT NULL,
			EXISTS (SELECT 1 FROM deps WHERE deps.dbid = 0 OR deps.dbid = (SELECT oid FROM here)),
			ARRAY(SELECT DISTINCT db.datname::text FROM deps JOIN pg_catalog.pg_database db ON db.oid = deps.dbid
				WHERE deps.dbid <> (SELECT oid FROM here) ORDER BY 1)
		FROM r`, username).Scan(&exists, &here, &elsewhere)
	if err != nil {
		return fmt.Errorf("inspect role: %w", err)
	}
	if !exists {
		return ErrRoleGone
	}
	for _, datname := range elsewhere {
		if err := dropOwnedIn(ctx, tx, connect, datname, username, user, reassignTo); err != nil {
			return err
		}
	}
	if here {
		if err := dropOwned(ctx, tx, tx, username, user, reassignTo); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(ctx, "DROP ROLE IF EXISTS "+user); err != nil {
		return fmt.Errorf("drop role: %w", redactPgError(err))
	}
	return nil
}

// dropOwnedIn reassigns and drops what username has in database datname,
// over a connection of its own, committed there. Borrowing is serialized
// by advisory locks taken in tx (this deployment's database).
func dropOwnedIn(ctx context.Context, tx pgx.Tx, connect connector, datname, username, user, reassignTo string) error {
	conn, err := connect(ctx, datname)
	if err != nil {
		return fmt.Errorf("database %s: connect as the admin to revoke what %s has there: %w", datname, username, redactPgError(err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = pgx.BeginFunc(ctx, conn, func(other pgx.Tx) error {
		return dropOwned(ctx, other, tx, username, user, reassignTo)
	})
	if err != nil {
		return fmt.Errorf("database %s: %w", datname, err)
	}
	return nil
}

// dropOwned runs REASSIGN OWNED and DROP OWNED in tx, borrowing the
// memberships they need; lock (the deployment's transaction) takes the
// advisory locks that keep concurrent borrowers apart.
func dropOwned(ctx context.Context, tx pgx.Tx, lock Execer, username, user, reassignTo string) error {
	var borrowed []string
	borrow := func(role string) error {
		var has bool
		if err := tx.QueryRow(ctx, "SELECT pg_catalog.pg_has_role(CURRENT_USER, $1::text, 'USAGE')", role).Scan(&has); err != nil {
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
		if _, err := lock.Exec(ctx, "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended($1::text, 0::bigint))", "ephemera.borrow/"+role); err != nil {
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
