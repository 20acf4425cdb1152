"""The demo consumer of ephemera in Python: the code a user writes (the Lambda handler).

GET /orders answers the database user and public.orders, read with a credential the ephemera
extension serves; with EPHEMERA_DEMO_AWS_PROFILE set, also the AWS identity (STS
GetCallerIdentity) of that AWS session. Environment: EPHEMERA_DEMO_CREDENTIAL (default
"orders", a name in the extension's EPHEMERA_CREDENTIALS), EPHEMERA_DEMO_AWS_PROFILE (a name in
EPHEMERA_AWS_PROFILES; unset: no AWS call) and AWS_ENDPOINT_URL_STS (optional).
"""
import json
import os
import sys
import time

import ephemera

# At module level, as in any Lambda function: created once per sandbox, during INIT.
db = ephemera.Database(os.environ.get("EPHEMERA_DEMO_CREDENTIAL") or "orders")
aws, sts = None, None
if os.environ.get("EPHEMERA_DEMO_AWS_PROFILE"):
    aws = ephemera.boto3_session(os.environ["EPHEMERA_DEMO_AWS_PROFILE"])
    sts = aws.client("sts", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_STS") or None)
try:  # connect during INIT, which is not billed to a request; the first invocation retries
    db.connection()
except Exception as e:
    print(json.dumps({"msg": "database not ready at init", "error": "%s: %s" % (type(e).__name__, e)}),
          file=sys.stderr, flush=True)


def orders(conn):
    """Both queries on one connection: current_user is the login that read the orders."""
    user = conn.execute("SELECT current_user").fetchone()[0]
    rows = conn.execute("SELECT id, item, qty FROM public.orders ORDER BY id").fetchall()
    return user, [{"id": i, "item": item, "qty": qty} for i, item, qty in rows]


def handler(event, context):
    start = time.monotonic()
    log = {"msg": "invocation", "request_id": context.aws_request_id, "route": event.get("routeKey")}
    try:
        user, rows = db.run(orders)
        body = {"current_user": user, "orders": rows,
                "lease_expires_at": db.cred["expires_at"].strftime("%Y-%m-%dT%H:%M:%SZ")}
        if sts is not None:
            ident = sts.get_caller_identity()
            key_id = aws.get_credentials().get_frozen_credentials().access_key  # an id, not a secret
            body["aws_arn"], body["aws_access_key_id"] = ident["Arn"], key_id
        status = 200
        log.update(orders=len(rows), current_user=user, lease_expires_at=body["lease_expires_at"],
                   aws_arn=body.get("aws_arn"))
    except Exception as e:  # the message names users and codes, never a password
        status, body = 500, {"error": "internal error", "request_id": context.aws_request_id}
        log["error"] = "%s: %s" % (type(e).__name__, e)
    log.update(status=status, duration_ms=int((time.monotonic() - start) * 1000))
    print(json.dumps(log), file=sys.stderr, flush=True)
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
