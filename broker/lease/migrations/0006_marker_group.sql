-- This deployment's marker: a NOLOGIN group that every ephemeral user is
-- made a member of in the transaction that creates it. The sweep drops only
-- members of it, never a role that merely looks like an ephemeral one (a
-- hand-made eph_etl_transactions is a valid-looking name). The name carries
-- a random suffix, so two deployments on one cluster (two databases, each
-- with its own schema ephemera) never share a marker. The admin role runs
-- the migrations, so it creates the group and administers it.
CREATE TABLE ephemera.deployment (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    marker_group text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT pg_catalog.now()
);

DO $$
DECLARE
    marker text := 'ephemera_leased_' || pg_catalog.substr(pg_catalog.md5(pg_catalog.gen_random_uuid()::text), 1, 12);
    opts   text := '';
    u      text;
BEGIN
    IF pg_catalog.current_setting('server_version_num')::int >= 160000 THEN
        -- Membership marks; it must not lend the group's (empty) privileges
        -- or let a member act as the group.
        opts := ' WITH INHERIT FALSE, SET FALSE';
    END IF;
    EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN NOINHERIT', marker);
    EXECUTE pg_catalog.format('COMMENT ON ROLE %I IS %L', marker,
        'ephemera: marks the ephemeral users of the deployment in database ' || pg_catalog.current_database());
    INSERT INTO ephemera.deployment (marker_group) VALUES (marker);
    -- Mark the users of leases issued before this migration.
    FOR u IN SELECT l.username FROM ephemera.leases l
             JOIN pg_catalog.pg_roles r ON r.rolname = l.username
             WHERE l.revoked_at IS NULL
    LOOP
        EXECUTE pg_catalog.format('GRANT %I TO %I', marker, u) || opts;
    END LOOP;
END $$;
