-- ephemera's state, in the target cluster. Owned by the broker's admin role;
-- PUBLIC (and so every ephemeral user) has no USAGE on this schema.
CREATE SCHEMA IF NOT EXISTS ephemera;
REVOKE ALL ON SCHEMA ephemera FROM PUBLIC;

CREATE TABLE ephemera.leases (
    lease_id        uuid PRIMARY KEY,
    database        text        NOT NULL,
    db_role         text        NOT NULL,
    username        text        NOT NULL UNIQUE,
    principal_arn   text        NOT NULL,
    account         text        NOT NULL,
    session         text        NOT NULL,
    member_of       text[]      NOT NULL,
    issued_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    max_expires_at  timestamptz NOT NULL,
    request_id      text        NOT NULL,
    revoked_at      timestamptz,
    revoke_reason   text,
    attempts        integer     NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz,
    CHECK (expires_at <= max_expires_at)
);
CREATE INDEX leases_live_by_role ON ephemera.leases (database, db_role) WHERE revoked_at IS NULL;
CREATE INDEX leases_live_by_expiry ON ephemera.leases (expires_at) WHERE revoked_at IS NULL;
CREATE INDEX leases_by_principal ON ephemera.leases (principal_arn, issued_at);

CREATE TABLE ephemera.audit_log (
    id            bigserial PRIMARY KEY,
    time          timestamptz NOT NULL,
    request_id    text        NOT NULL,
    event         text        NOT NULL,
    decision      text        NOT NULL CHECK (decision IN ('allow', 'deny', 'error')),
    reason        text        NOT NULL DEFAULT '',
    principal_arn text        NOT NULL DEFAULT '',
    account       text        NOT NULL DEFAULT '',
    session       text        NOT NULL DEFAULT '',
    source_ip     text        NOT NULL DEFAULT '',
    database      text        NOT NULL DEFAULT '',
    db_role       text        NOT NULL DEFAULT '',
    username      text        NOT NULL DEFAULT '',
    lease_id      uuid,
    ttl_seconds   bigint      NOT NULL DEFAULT 0,
    policies      text[]      NOT NULL DEFAULT '{}',
    latency_ms    double precision NOT NULL DEFAULT 0
);
CREATE INDEX audit_log_by_time ON ephemera.audit_log (time);
CREATE INDEX audit_log_by_principal ON ephemera.audit_log (principal_arn, time);

CREATE TABLE ephemera.nonces (
    nonce      text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX nonces_by_expiry ON ephemera.nonces (expires_at);
