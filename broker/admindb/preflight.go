package admindb

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/config"
)

// ErrPrivileges is matched (errors.Is) by every *PrivilegeError.
var ErrPrivileges = errors.New("admindb: the admin role lacks privileges")

// PrivilegeError lists what the admin role of one database lacks, each as
// the exact statement that grants it (to run as a superuser, or on RDS as
// the master user).
type PrivilegeError struct {
	Database string   // configured name
	Admin    string   // the role the broker logs in as
	Missing  []string // statements, each ending in ';'
}

func (e *PrivilegeError) Error() string {
	return fmt.Sprintf("admindb: database %s: admin role %s lacks privileges ephemera needs; run as a superuser:\n  %s",
		e.Database, e.Admin, strings.Join(e.Missing, "\n  "))
}

// Is makes errors.Is(err, ErrPrivileges) true.
func (e *PrivilegeError) Is(target error) bool { return target == ErrPrivileges }

// Querier runs queries (a pool, a connection or a transaction).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Preflight checks, over q (a session of db's admin role), that the admin
// role has what issuing and revoking need, and returns a *PrivilegeError
// naming each missing GRANT:
//
//   - CREATEROLE, to create and drop the ephemeral users;
//   - membership of pg_signal_backend (with its privileges), to end the
//     sessions of revoked users;
//   - ADMIN OPTION on every member_of group of every role (PostgreSQL 16
//     and later require it to grant a membership; before 16 CREATEROLE is
//     enough), and on this deployment's marker group once it exists;
//   - CREATE on the database, for schema ephemera (its migrations run at
//     every start).
//
// A superuser passes every check. The broker and the reaper call it at
// start; 'ephemera doctor' runs it for every configured database. marker
// is the deployment's marker group ("" before the first migration), which
// the caller reads through the lease store, the schema's only owner.
func Preflight(ctx context.Context, q Querier, db *config.Database, marker string) error {
	var admin, datname string
	var createRole, super, signal, createDB bool
	var version int
	err := q.QueryRow(ctx, `SELECT CURRENT_USER::text, r.rolcreaterole, r.rolsuper,
			pg_catalog.pg_has_role(CURRENT_USER, 'pg_signal_backend', 'USAGE'),
			pg_catalog.has_database_privilege(CURRENT_USER, pg_catalog.current_database(), 'CREATE'),
			pg_catalog.current_database()::text,
			pg_catalog.current_setting('server_version_num')::integer
		FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER`).Scan(
		&admin, &createRole, &super, &signal, &createDB, &datname, &version)
	if err != nil {
		return fmt.Errorf("admindb: database %s: preflight: %w", db.Name, err)
	}
	groups := memberOf(db)
	if marker != "" {
		groups = append(groups, marker)
	}
	if super {
		return nil
	}
	who := ident(admin)
	var missing []string
	if !createRole {
		missing = append(missing, "ALTER ROLE "+who+" CREATEROLE;")
	}
	if !signal {
		missing = append(missing, "GRANT pg_signal_backend TO "+who+";")
	}
	if len(groups) > 0 {
		rows, err := q.Query(ctx, `SELECT g.name, r.oid IS NOT NULL,
				CASE WHEN r.oid IS NULL THEN false
				ELSE pg_catalog.pg_has_role(CURRENT_USER, r.oid, 'MEMBER WITH ADMIN OPTION') END
			FROM pg_catalog.unnest($1::text[]) AS g(name)
			LEFT JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) g.name`, groups)
		if err != nil {
			return fmt.Errorf("admindb: database %s: preflight: %w", db.Name, err)
		}
		type group struct {
			name          string
			exists, admin bool
		}
		gs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (group, error) {
			var g group
			err := r.Scan(&g.name, &g.exists, &g.admin)
			return g, err
		})
		if err != nil {
			return fmt.Errorf("admindb: database %s: preflight: %w", db.Name, err)
		}
		for _, g := range gs {
			switch {
			case !g.exists:
				missing = append(missing, "CREATE ROLE "+ident(g.name)+" NOLOGIN; -- named in member_of, does not exist")
				if version >= 160000 {
					missing = append(missing, grantAdmin(g.name, who))
				}
			case version >= 160000 && !g.admin:
				missing = append(missing, grantAdmin(g.name, who))
			}
		}
	}
	if !createDB {
		missing = append(missing, "GRANT CREATE ON DATABASE "+ident(datname)+" TO "+who+";")
	}
	if len(missing) > 0 {
		return &PrivilegeError{Database: db.Name, Admin: admin, Missing: missing}
	}
	return nil
}

// grantAdmin lets the admin grant group without using its privileges.
func grantAdmin(group, who string) string {
	return "GRANT " + ident(group) + " TO " + who + " WITH ADMIN OPTION, INHERIT FALSE, SET FALSE;"
}

// memberOf returns every group db's roles name, sorted, once each.
func memberOf(db *config.Database) []string {
	var out []string
	for _, r := range db.Roles {
		out = append(out, r.MemberOf...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

var plainIdent = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

// ident writes a role or database name as SQL: bare when it needs no
// quotes, else double-quoted.
func ident(s string) string {
	if plainIdent.MatchString(s) {
		return s
	}
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
