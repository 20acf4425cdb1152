// The demo consumer of ephemera in Node.js: the code a user writes (the Lambda handler).
//
// GET /orders answers the database user and public.orders, read with a credential the ephemera
// extension serves; with EPHEMERA_DEMO_AWS_PROFILE set, also the AWS identity (STS
// GetCallerIdentity) of that AWS session. Environment: EPHEMERA_DEMO_CREDENTIAL (default
// "orders", a name in the extension's EPHEMERA_CREDENTIALS), EPHEMERA_DEMO_AWS_PROFILE (a name in
// EPHEMERA_AWS_PROFILES; unset: no AWS call) and AWS_ENDPOINT_URL_STS (optional).
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";
import { Database, awsCredentials } from "./ephemera.js";

// At module level, as in any Lambda function: created once per sandbox, during INIT.
const db = new Database(process.env.EPHEMERA_DEMO_CREDENTIAL || "orders");
const profile = process.env.EPHEMERA_DEMO_AWS_PROFILE;
const sts = profile ? new STSClient({ credentials: awsCredentials(profile), endpoint: process.env.AWS_ENDPOINT_URL_STS || undefined }) : null;
try { // connect during INIT, which is not billed to a request; the first invocation retries
  await db.connection();
} catch (e) {
  console.error(JSON.stringify({ msg: "database not ready at init", error: `${e.name}: ${e.message}` }));
}

// orders runs both queries on one connection: current_user is the login that read the orders.
async function orders(client) {
  const user = (await client.query("SELECT current_user AS u")).rows[0].u;
  const { rows } = await client.query("SELECT id, item, qty FROM public.orders ORDER BY id");
  return { user, rows };
}

export async function handler(event, context) {
  const start = Date.now();
  const log = { msg: "invocation", request_id: context.awsRequestId, route: event.routeKey };
  let status = 200;
  let body;
  try {
    const { user, rows } = await db.run(orders);
    body = { current_user: user, orders: rows, lease_expires_at: db.cred.expires_at.toISOString().replace(/\.\d+Z$/, "Z") };
    if (sts) {
      const ident = await sts.send(new GetCallerIdentityCommand({}));
      const { accessKeyId } = await sts.config.credentials(); // an id, not a secret
      Object.assign(body, { aws_arn: ident.Arn, aws_access_key_id: accessKeyId });
    }
    Object.assign(log, { orders: rows.length, current_user: user, lease_expires_at: body.lease_expires_at, aws_arn: body.aws_arn });
  } catch (e) { // the message names users and codes, never a password
    status = 500;
    body = { error: "internal error", request_id: context.awsRequestId };
    log.error = `${e.name}: ${e.message}`;
  }
  Object.assign(log, { status, duration_ms: Date.now() - start });
  console.error(JSON.stringify(log));
  return { statusCode: status, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}
