package pgserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
)

// ---------------------------------------------------------------------------
// External mode.

func startExternal(ctx context.Context, dsn string, log *slog.Logger) (_ *Server, retErr error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the connection string; do not repeat it.
		return nil, fmt.Errorf("pgserver: %s is not a valid connection string", EnvDatabaseURL)
	}
	s := &Server{
		log:      log,
		external: true,
		baseConn: dsn,
		host:     cfg.Host,
		port:     int(cfg.Port),
		secrets:  []string{cfg.Password},
	}
	defer func() {
		if retErr != nil {
			retErr = s.redact(retErr)
		}
	}()

	suffix, err := randomHex(8)
	if err != nil {
		return nil, fmt.Errorf("pgserver: generate database name: %w", err)
	}
	name := externalDBPrefix + suffix

	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgserver: connect to %s: %w", EnvDatabaseURL, err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return nil, fmt.Errorf("pgserver: create database %s: %w", name, err)
	}
	s.externalDB = name
	s.database = name
	s.url = overrideConnString(dsn, cfg.User, cfg.Password, name)

	// Check that the new URL really reaches the new database.
	check, err := pgx.Connect(ctx, s.url)
	if err == nil {
		var got string
		err = check.QueryRow(ctx, "SELECT current_database()").Scan(&got)
		check.Close(context.WithoutCancel(ctx))
		if err == nil && got != name {
			err = fmt.Errorf("connected to database %q, want %q", got, name)
		}
	}
	if err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("pgserver: connect to test database %s: %w", name, err)
	}
	log.Info("pgserver: using external server", "host", s.host, "port", s.port, "database", name)
	return s, nil
}

func (s *Server) stopExternal() error {
	if s.externalDB == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	cfg, err := pgx.ParseConfig(s.baseConn)
	if err != nil {
		return fmt.Errorf("pgserver: %s is not a valid connection string", EnvDatabaseURL)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return s.redact(fmt.Errorf("pgserver: connect to drop database %s: %w", s.externalDB, err))
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{s.externalDB}.Sanitize()+" WITH (FORCE)"); err != nil {
		return s.redact(fmt.Errorf("pgserver: drop database %s: %w", s.externalDB, err))
	}
	s.log.Info("pgserver: dropped external test database", "database", s.externalDB)
	return nil
}

// overrideConnString returns base with user, password and database
// replaced, keeping every other setting (host, TLS options, ...).
func overrideConnString(base, user, password, dbname string) string {
	if strings.HasPrefix(base, "postgres://") || strings.HasPrefix(base, "postgresql://") {
		if u, err := url.Parse(base); err == nil {
			u.User = url.UserPassword(user, password)
			u.Path = "/" + dbname
			u.RawPath = ""
			q := u.Query()
			for _, k := range []string{"user", "password", "dbname", "database"} {
				q.Del(k)
			}
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	// Keyword/value form: later keywords win.
	return strings.TrimSpace(base) +
		" user=" + kvQuote(user) +
		" password=" + kvQuote(password) +
		" dbname=" + kvQuote(dbname)
}

func kvQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `\'`)
	return "'" + s + "'"
}
