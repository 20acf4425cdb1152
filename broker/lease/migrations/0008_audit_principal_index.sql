-- audit_log_by_principal (principal_arn, time) served no query: the audit
-- reader matches the principal ignoring case (lower(principal_arn) =
-- lower($1)), which a plain index on principal_arn cannot answer, so every
-- audited decision paid for a btree insert of a 60-to-100-byte key (about
-- 140 bytes of WAL per issued credential, measured) and got nothing back.
-- An audit query by principal reads the rows of its time window through
-- audit_log_by_time; a principal's leases are found through the lease
-- table's own principal indexes.
DROP INDEX IF EXISTS ephemera.audit_log_by_principal;
