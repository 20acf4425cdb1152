package invoke

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
)

// InvokePathPrefix starts the path of the Lambda Invoke API:
// POST /2015-03-31/functions/{FunctionName}/invocations.
const InvokePathPrefix = "/2015-03-31/functions/"

// invoker is what the Invoke API needs of a Function.
type invoker interface {
	Invoke(ctx context.Context, event []byte) (*lambdaemu.Result, error)
}

// InvokeAPI is the Lambda Invoke API for this function, as `sam local
// start-lambda` serves it, so that the AWS CLI and SDKs can call it with an
// endpoint override:
//
//	POST /2015-03-31/functions/{name}/invocations   body: the event
//
// {name} is the function's name or ARN. The answer is 200 with the
// function's result; a function error adds X-Amz-Function-Error: Unhandled
// and the error document. Only the RequestResponse invocation type is
// served. Invocations run one at a time in the one warm sandbox; one that
// the caller abandons still runs to its end, so the sandbox stays warm.
// Each invocation is noted on logs ("[local] invoke ...").
func (f *Function) InvokeAPI() http.Handler { return invokeAPI(f.Name, f, f.logs) }

func invokeAPI(name string, fn invoker, logs io.Writer) http.Handler {
	arn := "arn:aws:lambda:us-east-1:" + lambdaemu.AccountID + ":function:" + name
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target, ok := strings.CutPrefix(r.URL.Path, InvokePathPrefix)
		target, ok2 := strings.CutSuffix(target, "/invocations")
		if !ok || !ok2 || target == "" || strings.Contains(target, "/") {
			apiError(w, http.StatusNotFound, "ResourceNotFoundException", "no such API: POST "+InvokePathPrefix+"{name}/invocations")
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			apiError(w, http.StatusMethodNotAllowed, "InvalidRequestContentException", "only POST invokes")
			return
		}
		if target != name && target != arn && !strings.HasSuffix(target, ":function:"+name) {
			apiError(w, http.StatusNotFound, "ResourceNotFoundException", fmt.Sprintf("Function not found: %s (this endpoint serves %s)", target, name))
			return
		}
		if t := r.Header.Get("X-Amz-Invocation-Type"); t != "" && t != "RequestResponse" {
			apiError(w, http.StatusBadRequest, "InvalidParameterValueException", "only the RequestResponse invocation type is served locally")
			return
		}
		event, err := io.ReadAll(http.MaxBytesReader(w, r.Body, lambdaemu.MaxPayloadSize))
		if err != nil {
			apiError(w, http.StatusRequestEntityTooLarge, "RequestTooLargeException", "the event is larger than 6 MB")
			return
		}
		if len(strings.TrimSpace(string(event))) == 0 {
			event = []byte("{}")
		}
		if !json.Valid(event) {
			apiError(w, http.StatusBadRequest, "InvalidRequestContentException", "the event is not JSON")
			return
		}
		start := time.Now()
		res, err := fn.Invoke(context.WithoutCancel(r.Context()), event)
		var ie *lambdaemu.InitError
		switch {
		case errors.As(err, &ie): // Lambda answers a failed INIT as a function error
			res = &lambdaemu.Result{ErrorType: ie.ErrorType, Payload: errorDoc(ie.ErrorType, ie.Message)}
		case err != nil:
			fmt.Fprintf(logs, "[local] invoke failed: %v\n", err)
			apiError(w, http.StatusInternalServerError, "ServiceException", err.Error())
			return
		}
		outcome := "ok"
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amz-Executed-Version", "$LATEST")
		if res.ErrorType != "" {
			outcome = "function error " + res.ErrorType
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
		}
		if res.RequestID != "" {
			w.Header().Set("X-Amzn-Requestid", res.RequestID)
		}
		fmt.Fprintf(logs, "[local] invoke %s %s: %s in %d ms\n", name, res.RequestID, outcome, time.Since(start).Milliseconds())
		_, _ = w.Write(res.Payload)
	})
}

// apiError writes an error of the Lambda API (the type in
// X-Amzn-ErrorType and the body, as the AWS SDKs read it).
func apiError(w http.ResponseWriter, status int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", typ)
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"Type": "User", "message": msg})
	_, _ = w.Write(b)
}

// errorDoc is a Lambda function error document.
func errorDoc(typ, msg string) []byte {
	b, _ := json.Marshal(map[string]string{"errorType": typ, "errorMessage": msg})
	return b
}
