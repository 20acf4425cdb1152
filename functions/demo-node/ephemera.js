// ephemera.js: use the ephemera Lambda extension from Node.js (20+). Copy this file into your
// function. The extension, in the same sandbox, serves short-lived credentials on
// 127.0.0.1:$EPHEMERA_PORT. No dependency of its own: `pg` is imported when you use Database.
//
//   const db = new Database("orders");                    // at module level: one connection
//   const rows = await db.run((c) => c.query("SELECT 1"));
//   const sts = new STSClient({ credentials: awsCredentials("reports") }); // the profile's role
//
// Database keeps one connection. When less than a margin is left on its credential it reads
// the credential again and reconnects if the extension now serves another user (a renewed
// lease keeps its user; at its max TTL the extension issues a new one); a query whose
// connection was ended under it ("terminating connection due to administrator command": the
// broker's reaper ends the sessions of expired users) is run once more on a new connection.
// Only retry-safe work belongs in run(): a read, or one transaction.
//
// awsCredentials must be passed to every AWS client explicitly. Lambda always sets
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN (the execution role), and the
// SDK's default chain prefers them to AWS_CONTAINER_CREDENTIALS_FULL_URI: setting that alone
// silently signs every call as the execution role.

export const DEFAULT_PORT = 7411; // the extension's default EPHEMERA_PORT
export const RETIRE_MARGIN_MS = 30_000; // ask the extension again when less is left on a connection

export class EphemeraError extends Error {
  constructor(status, code, message) {
    super(`ephemera: ${status} ${code}: ${message}`);
    this.name = "EphemeraError";
    this.status = status; // HTTP status; 0: the extension could not be reached
    this.code = code;
  }
}

async function get(path, header) {
  const url = `http://127.0.0.1:${process.env.EPHEMERA_PORT || DEFAULT_PORT}${path}`;
  let resp;
  try {
    const headers = { [header]: process.env.AWS_SESSION_TOKEN ?? "" };
    resp = await fetch(url, { headers, signal: AbortSignal.timeout(10_000) });
  } catch (e) {
    throw new EphemeraError(0, "unreachable", e.cause?.message ?? e.message);
  }
  const doc = await resp.json().catch(() => ({}));
  if (!resp.ok) { // the body names an error code, never a secret
    const err = doc.error ?? doc;
    throw new EphemeraError(resp.status, err.code ?? "?", err.message ?? "");
  }
  return doc;
}

// credential returns the database credential `name`: username, password, host, port, dbname,
// sslmode, dsn, lease_id, expires_at (a Date). refresh=true asks for a new one.
export async function credential(name, refresh = false) {
  const c = await get(`/v1/credentials/${encodeURIComponent(name)}${refresh ? "?refresh=true" : ""}`, "X-Ephemera-Token");
  return { ...c, expires_at: new Date(c.expires_at) };
}

// pgConfig maps a credential to a pg client configuration (libpq's sslmode to pg's ssl).
export function pgConfig(c) {
  const ssl = { disable: false, allow: false, prefer: { rejectUnauthorized: false }, require: { rejectUnauthorized: false },
    "verify-ca": { checkServerIdentity: () => undefined } }[c.sslmode] ?? true;
  return { host: c.host, port: c.port, user: c.username, password: c.password, database: c.dbname, ssl };
}

const lost = (e) => /^(57P0|08)/.test(e?.code ?? "") || /Connection terminated|not queryable/i.test(e?.message ?? "");

// Database is one pg.Client for credential `name`, kept valid across rotations. clientConfig
// is merged into each client's configuration (for example an ssl object with RDS's CA).
export class Database {
  constructor(name, { marginMs = RETIRE_MARGIN_MS, ...clientConfig } = {}) {
    Object.assign(this, { name, marginMs, clientConfig, client: null, cred: null, queue: Promise.resolve() });
  }

  // connection returns the client, (re)connected when the extension serves another user or
  // less than the margin is left on it (a renewed lease keeps its user and its connection).
  async connection() {
    if (this.client && this.cred.expires_at - Date.now() >= this.marginMs) return this.client;
    let c;
    try {
      c = await credential(this.name);
    } catch (e) {
      if (!this.client || this.cred.expires_at <= Date.now()) throw e;
      return this.client; // the extension cannot answer now; this login is still valid
    }
    if (!this.client || c.username !== this.cred.username) await this.#connect(c);
    this.cred = c; // same user: the lease was renewed, or this is all there is
    return this.client;
  }

  async #connect(c) {
    const { default: pg } = await import("pg");
    await this.close();
    const open = async (c) => {
      const client = new pg.Client({ ...pgConfig(c), ...this.clientConfig });
      client.on("error", () => { if (this.client === client) this.client = null; }); // ended while idle
      client.on("end", () => { if (this.client === client) this.client = null; });
      await client.connect();
      return client;
    };
    try {
      this.client = await open(c);
    } catch (e) {
      if (e.code !== "28P01" && e.code !== "28000") throw e;
      c = await credential(this.name, true); // a login refused: one new credential
      this.client = await open(c);
    }
    this.cred = c;
  }

  // run calls fn(client), one call at a time; once more on a new connection if it was lost.
  run(fn) {
    const once = async () => {
      try {
        return await fn(await this.connection());
      } catch (e) {
        if (!lost(e)) throw e;
        await this.close();
        return fn(await this.connection());
      }
    };
    const p = this.queue.then(once, once);
    this.queue = p.catch(() => {});
    return p;
  }

  async close() {
    const client = this.client;
    this.client = null;
    if (client) await client.end().catch(() => {});
  }
}

// awsCredentials is an AWS SDK v3 credentials provider for the AWS session `name`
// (EPHEMERA_AWS_PROFILES): the SDK calls it on first use and again 5 minutes before the
// session expires, and the extension serves a session with at least 5 minutes left.
export function awsCredentials(name) {
  return async () => {
    const d = await get(`/v1/aws/${encodeURIComponent(name)}`, "Authorization");
    return { accessKeyId: d.AccessKeyId, secretAccessKey: d.SecretAccessKey, sessionToken: d.Token, expiration: new Date(d.Expiration) };
  };
}
