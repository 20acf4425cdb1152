-- Roles with the ephemera prefix and no live lease, with when a sweep first
-- saw them: a role is dropped only once it has been orphaned for the grace
-- period (PostgreSQL records no creation time for roles).
CREATE TABLE ephemera.orphans (
    rolname    text PRIMARY KEY,
    first_seen timestamptz NOT NULL
);
