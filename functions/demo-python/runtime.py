"""A minimal AWS Lambda Runtime API loop, standing in for awslambdaric (not installable here).

Not user code: in Lambda's python runtimes this part is provided. It imports the handler
named on the command line ("module.function"), then forever: GET .../invocation/next, call the
handler, POST its result to .../response (or the exception to .../error).
"""
import importlib
import json
import os
import sys
import time
import traceback
import urllib.request

API = "http://%s/2018-06-01/runtime" % os.environ["AWS_LAMBDA_RUNTIME_API"]
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(path, doc, error_type=None):
    headers = {"Content-Type": "application/json"}
    if error_type:
        headers["Lambda-Runtime-Function-Error-Type"] = error_type
    req = urllib.request.Request(API + path, data=json.dumps(doc).encode(), headers=headers, method="POST")
    _http.open(req).close()


class Context:
    def __init__(self, headers):
        self.aws_request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn")
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0"))

    def get_remaining_time_in_millis(self):
        return max(self._deadline_ms - int(time.time() * 1000), 0)


def error(e):
    return {"errorMessage": str(e), "errorType": type(e).__name__,
            "stackTrace": traceback.format_tb(e.__traceback__)}


def main():
    module, _, name = sys.argv[1].rpartition(".")
    try:
        fn = getattr(importlib.import_module(module), name)
    except Exception as e:
        post("/init/error", error(e), "Runtime.ImportModuleError")
        raise
    while True:
        with _http.open(API + "/invocation/next") as resp:
            headers, event = resp.headers, json.load(resp)
        ctx = Context(headers)
        os.environ["_X_AMZN_TRACE_ID"] = headers.get("Lambda-Runtime-Trace-Id", "")
        try:
            result = fn(event, ctx)
        except Exception as e:
            traceback.print_exc()
            post("/invocation/%s/error" % ctx.aws_request_id, error(e), "Unhandled")
            continue
        post("/invocation/%s/response" % ctx.aws_request_id, result)


if __name__ == "__main__":
    main()
