// A minimal AWS Lambda Runtime API loop, standing in for the runtime interface client that
// Lambda's nodejs runtimes provide (not installable here). Not user code: it imports the
// handler named on the command line ("file.function"), then forever: GET .../invocation/next,
// call the handler, POST its result to .../response (or the error to .../error). It uses
// node:http without timeouts: a long poll may span a freeze of the sandbox.
import http from "node:http";
import path from "node:path";
import { pathToFileURL } from "node:url";

const base = `http://${process.env.AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime`;

function request(method, url, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { "Content-Type": "application/json", ...headers } }, (res) => {
      let data = "";
      res.setEncoding("utf8").on("data", (d) => { data += d; }).on("end", () => resolve({ headers: res.headers, data }));
    });
    req.on("error", reject).end(body === undefined ? undefined : JSON.stringify(body));
  });
}

const errorDoc = (e) => ({ errorMessage: String(e?.message ?? e), errorType: e?.name ?? "Error", stackTrace: String(e?.stack ?? "").split("\n") });

const [file, name] = process.argv[2].split(".");
let fn;
try {
  fn = (await import(pathToFileURL(path.join(process.env.LAMBDA_TASK_ROOT, `${file}.js`)).href))[name];
} catch (e) {
  await request("POST", `${base}/init/error`, errorDoc(e), { "Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError" });
  throw e;
}
for (;;) {
  const { headers, data } = await request("GET", `${base}/invocation/next`);
  const id = headers["lambda-runtime-aws-request-id"];
  const deadline = Number(headers["lambda-runtime-deadline-ms"]);
  const context = {
    awsRequestId: id,
    invokedFunctionArn: headers["lambda-runtime-invoked-function-arn"],
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
  process.env._X_AMZN_TRACE_ID = headers["lambda-runtime-trace-id"] ?? "";
  try {
    const result = await fn(JSON.parse(data), context);
    await request("POST", `${base}/invocation/${id}/response`, result);
  } catch (e) {
    console.error(e);
    await request("POST", `${base}/invocation/${id}/error`, errorDoc(e), { "Lambda-Runtime-Function-Error-Type": "Unhandled" });
  }
}
