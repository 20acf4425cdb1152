"""ephemera.py: use the ephemera Lambda extension from Python. Copy this file into your function.

The extension, in the same sandbox, serves short-lived credentials on 127.0.0.1:$EPHEMERA_PORT.
Only the standard library is needed; psycopg (3) and boto3 are imported when you use them.

    db = ephemera.Database("orders")                         # at module level: one connection
    rows = db.run(lambda conn: conn.execute("SELECT 1").fetchall())
    sts = ephemera.boto3_session("reports").client("sts")    # signs with the profile's role

Database keeps one connection. When less than a margin is left on its credential it reads the
credential again and reconnects if the extension now serves another user (a renewed lease
keeps its user; at its max TTL the extension issues a new one); a query whose
connection was ended under it ("terminating connection due to administrator command": the
broker's reaper ends the sessions of expired users) is run once more on a new connection.
Only retry-safe work belongs in run(): a read, or one transaction.

boto3_session builds its credentials from the extension explicitly. Lambda always sets
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN (the execution role), and the SDK's
default chain prefers them to AWS_CONTAINER_CREDENTIALS_FULL_URI: setting that alone
silently signs every call as the execution role.
"""
import datetime
import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_PORT = 7411  # the extension's default EPHEMERA_PORT
RETIRE_MARGIN = 30.0  # seconds: ask the extension again when less is left on a connection
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


class EphemeraError(Exception):
    """The extension refused or could not answer; .status is the HTTP status (0: unreachable)."""

    def __init__(self, status, code, message):
        super().__init__(f"ephemera: {status} {code}: {message}")
        self.status, self.code = status, code


def _get(path, header):
    url = "http://127.0.0.1:%s%s" % (os.environ.get("EPHEMERA_PORT") or DEFAULT_PORT, path)
    req = urllib.request.Request(url, headers={header: os.environ.get("AWS_SESSION_TOKEN", "")})
    try:
        with _opener.open(req, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # the body names an error code, never a secret
        try:
            doc = json.load(e)
            doc = doc.get("error", doc)
        except ValueError:
            doc = {}
        raise EphemeraError(e.code, doc.get("code", "?"), doc.get("message", "")) from None
    except OSError as e:
        raise EphemeraError(0, "unreachable", str(e)) from None


def parse_time(s):
    """RFC 3339 (any number of fractional digits, "Z") to an aware datetime."""
    s = re.sub(r"(\.\d{6})\d+", r"\1", s.replace("Z", "+00:00"))
    return datetime.datetime.fromisoformat(s)


def credential(name, refresh=False):
    """The database credential `name`: username, password, host, port, dbname, sslmode, dsn,
    lease_id, expires_at (a datetime). refresh=True asks for a new one."""
    path = "/v1/credentials/" + urllib.parse.quote(name, safe="") + ("?refresh=true" if refresh else "")
    c = _get(path, "X-Ephemera-Token")
    c["expires_at"] = parse_time(c["expires_at"])
    return c


def _left(c):
    return (c["expires_at"] - datetime.datetime.now(datetime.timezone.utc)).total_seconds()


class Database:
    """One psycopg connection for credential `name`, kept valid across rotations."""

    def __init__(self, name, margin=RETIRE_MARGIN, **connect_kwargs):
        self.name, self.margin, self.kwargs = name, margin, {"autocommit": True, **connect_kwargs}
        self.conn, self.cred, self._lock = None, None, threading.Lock()

    def connection(self):
        """The connection, (re)connected when the extension serves another user or less
        than `margin` is left on it (a renewed lease keeps its user and its connection)."""
        if self.conn is None or self.conn.closed or _left(self.cred) < self.margin:
            try:
                c = credential(self.name)
            except EphemeraError:
                if self.conn is None or self.conn.closed or _left(self.cred) <= 0:
                    raise
                return self.conn  # the extension cannot answer now; this login is still valid
            if self.conn is None or self.conn.closed or c["username"] != self.cred["username"]:
                self._connect(c)
            self.cred = c  # same user: the lease was renewed, or this is all there is
        return self.conn

    def _connect(self, c):
        import psycopg

        self.close()
        try:
            self.conn = psycopg.connect(c["dsn"], **self.kwargs)
        except psycopg.OperationalError as e:
            if getattr(e, "sqlstate", None) not in ("28P01", "28000"):
                raise
            c = credential(self.name, refresh=True)  # a login refused: one new credential
            self.conn = psycopg.connect(c["dsn"], **self.kwargs)
        self.cred = c

    def run(self, fn):
        """fn(conn) on the connection; once more on a new one if the connection was lost."""
        import psycopg

        with self._lock:
            try:
                return fn(self.connection())
            except psycopg.OperationalError:
                if self.conn is not None and not self.conn.closed and not self.conn.broken:
                    raise  # the server answered: not a lost connection
                self.close()
                return fn(self.connection())

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def aws_credentials(name):
    """botocore credentials of the AWS session `name` (EPHEMERA_AWS_PROFILES), read from the
    extension on first use and again 4 minutes before they expire (the extension serves a
    session with at least 5 minutes left)."""
    from botocore.credentials import DeferredRefreshableCredentials

    class Session(DeferredRefreshableCredentials):
        _advisory_refresh_timeout, _mandatory_refresh_timeout = 4 * 60, 2 * 60

    def fetch():
        d = _get("/v1/aws/" + urllib.parse.quote(name, safe=""), "Authorization")
        return {"access_key": d["AccessKeyId"], "secret_key": d["SecretAccessKey"],
                "token": d["Token"], "expiry_time": d["Expiration"]}

    return Session(refresh_using=fetch, method="ephemera")


def boto3_session(name, **kwargs):
    """A boto3.Session that signs with the AWS session `name` and nothing else."""
    import boto3
    import botocore.credentials
    import botocore.session

    class Provider(botocore.credentials.CredentialProvider):
        METHOD = "ephemera"

        def load(self):
            return aws_credentials(name)

    core = botocore.session.get_session()
    core.register_component("credential_provider", botocore.credentials.CredentialResolver([Provider()]))
    return boto3.Session(botocore_session=core, **kwargs)
