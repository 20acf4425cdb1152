package admindb

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/broker/config"
)

// ErrAttention is returned by Doctor when a database failed a check.
var ErrAttention = errors.New("admindb: doctor: databases need attention")

// PublicConnect returns the databases of q's cluster, other than those
// named in managed, where PUBLIC may CONNECT (template1 and postgres, by
// default). An ephemeral user can connect to each of them and own objects
// or set default privileges there: revocation still reaches them (the
// admin connects there too), but every such database widens what a
// short-lived user can touch and what a revocation depends on.
func PublicConnect(ctx context.Context, q Querier, managed []string) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT datname::text FROM pg_catalog.pg_database
		WHERE datallowconn AND pg_catalog.has_database_privilege('public', oid, 'CONNECT')
			AND NOT datname::text OPERATOR(pg_catalog.=) ANY ($1::text[])
		ORDER BY 1`, managed)
	if err != nil {
		return nil, fmt.Errorf("admindb: public connect: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("admindb: public connect: %w", err)
	}
	return names, nil
}

// Doctor connects to every configured database as its admin role, runs
// Preflight there and PublicConnect, and writes a report to w: one line per
// database ("ok", or each missing GRANT as the statement to run), then
// warnings with the REVOKE statements for databases PUBLIC may connect
// to. It returns ErrAttention (wrapping each database's error) when a
// database cannot be reached or lacks privileges; warnings alone are not
// errors.
func Doctor(ctx context.Context, w io.Writer, cfg *config.Config, opts Options) error {
	managed := make([]string, 0, len(cfg.Databases))
	for _, name := range cfg.DatabaseNames() {
		managed = append(managed, cfg.Databases[name].DBName)
	}
	var errs []error
	public := map[string][]string{} // cluster → databases PUBLIC may connect to
	var clusters []string
	for _, name := range cfg.DatabaseNames() {
		db := cfg.Databases[name]
		if db.Admin.Auth == "rds_iam" && opts.AWS == nil {
			loaded, err := awsconfig.LoadDefaultConfig(ctx)
			if err != nil {
				return fmt.Errorf("admindb: doctor: aws config for rds_iam: %w", err)
			}
			opts.AWS = &loaded
		}
		if opts.MaxConns <= 0 {
			opts.MaxConns = 1
		}
		where, cluster, publicDBs, dbErr := doctorOne(ctx, db, opts, managed)
		switch {
		case dbErr == nil:
			fmt.Fprintf(w, "%s (%s): ok\n", name, where)
		case errors.Is(dbErr, ErrPrivileges):
			var pe *PrivilegeError
			errors.As(dbErr, &pe)
			fmt.Fprintf(w, "%s (%s): admin role %s lacks privileges; run as a superuser:\n  %s\n", name, where, pe.Admin, strings.Join(pe.Missing, "\n  "))
		default:
			fmt.Fprintf(w, "%s (%s): cannot check: %v\n", name, where, dbErr)
		}
		if dbErr != nil {
			errs = append(errs, dbErr)
		}
		if len(publicDBs) > 0 {
			if _, seen := public[cluster]; !seen {
				clusters = append(clusters, cluster)
			}
			public[cluster] = publicDBs
		}
	}
	for _, cluster := range clusters {
		dbs := public[cluster]
		fmt.Fprintf(w, "warning: on %s, PUBLIC may CONNECT to databases ephemera does not manage: %s.\n", cluster, strings.Join(dbs, ", "))
		fmt.Fprintf(w, "  An ephemeral user can connect there and own objects or set default privileges. Unless something needs it, run:\n")
		for _, d := range dbs {
			fmt.Fprintf(w, "  REVOKE CONNECT ON DATABASE %s FROM PUBLIC;\n", ident(d))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %d of %d: %w", ErrAttention, len(errs), len(cfg.Databases), errors.Join(errs...))
	}
	return nil
}

// doctorOne checks one database; where and cluster describe it without secrets.
func doctorOne(ctx context.Context, db *config.Database, opts Options, managed []string) (where, cluster string, public []string, err error) {
	where, cluster = fmt.Sprintf("%s@%s:%d/%s", db.Admin.User, db.Host, db.Port, db.DBName), fmt.Sprintf("%s:%d", db.Host, db.Port)
	pool, err := Connect(ctx, db, opts)
	if err != nil {
		return where, cluster, nil, fmt.Errorf("admindb: database %s: %w", db.Name, err)
	}
	defer pool.Close()
	cc := pool.Config().ConnConfig
	where, cluster = fmt.Sprintf("%s@%s:%d/%s", cc.User, cc.Host, cc.Port, cc.Database), fmt.Sprintf("%s:%d", cc.Host, cc.Port)
	var marker string
	if opts.MarkerGroup != nil {
		if marker, err = opts.MarkerGroup(ctx, pool); err != nil {
			return where, cluster, nil, fmt.Errorf("admindb: database %s: marker group: %w", db.Name, err)
		}
	}
	if err := Preflight(ctx, pool, db, marker); err != nil {
		if !errors.Is(err, ErrPrivileges) {
			return where, cluster, nil, err
		}
		public, perr := PublicConnect(ctx, pool, managed)
		return where, cluster, public, errors.Join(err, perr)
	}
	public, err = PublicConnect(ctx, pool, managed)
	return where, cluster, public, err
}
