-- AWS sessions (POST /v1/aws-credentials) are audited like database issues;
-- these columns say which profile and which SourceIdentity STS recorded.
ALTER TABLE ephemera.audit_log
    ADD COLUMN aws_profile     text NOT NULL DEFAULT '',
    ADD COLUMN source_identity text NOT NULL DEFAULT '';
