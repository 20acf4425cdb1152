// Command fn is the test function for package lambdaemu: a Go custom
// runtime (build with -tags lambda.norpc) that echoes and misbehaves on
// request.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type request struct {
	Echo    json.RawMessage `json:"echo,omitempty"`
	Fail    string          `json:"fail,omitempty"`     // return a *FunctionError with this message
	SleepMS int             `json:"sleep_ms,omitempty"` // sleep before answering
	Env     []string        `json:"env,omitempty"`      // report these environment variables
	Exit    bool            `json:"exit,omitempty"`     // crash the runtime
}

type response struct {
	Echo       json.RawMessage   `json:"echo,omitempty"`
	RequestID  string            `json:"request_id"`
	ARN        string            `json:"arn"`
	DeadlineMS int64             `json:"deadline_ms"`
	NowMS      int64             `json:"now_ms"`
	TraceID    string            `json:"trace_id"`
	Env        map[string]string `json:"env,omitempty"`
}

// FunctionError is the error type the function reports; aws-lambda-go
// names it "FunctionError" in errorType.
type FunctionError struct{ msg string }

func (e *FunctionError) Error() string { return e.msg }

func handle(ctx context.Context, req request) (response, error) {
	if req.SleepMS > 0 {
		time.Sleep(time.Duration(req.SleepMS) * time.Millisecond)
	}
	if req.Exit {
		fmt.Println("fn: exiting on request")
		os.Exit(3)
	}
	if req.Fail != "" {
		return response{}, &FunctionError{req.Fail}
	}
	lc, _ := lambdacontext.FromContext(ctx)
	dl, _ := ctx.Deadline()
	res := response{Echo: req.Echo, DeadlineMS: dl.UnixMilli(), NowMS: time.Now().UnixMilli()}
	if lc != nil {
		res.RequestID, res.ARN = lc.AwsRequestID, lc.InvokedFunctionArn
	}
	res.TraceID = os.Getenv("_X_AMZN_TRACE_ID")
	if len(req.Env) > 0 {
		res.Env = map[string]string{}
		for _, k := range req.Env {
			if v, ok := os.LookupEnv(k); ok {
				res.Env[k] = v
			}
		}
	}
	fmt.Printf("fn: invoke %s\n", res.RequestID)
	return res, nil
}

// reportInitError posts /runtime/init/error the way a custom runtime
// reports a failed initialization, then exits.
func reportInitError(msg string) {
	body := `{"errorMessage":"` + msg + `","errorType":"Runtime.ConfigError"}`
	url := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/init/error"
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Lambda-Runtime-Function-Error-Type", "Runtime.ConfigError")
	if res, err := http.DefaultClient.Do(req); err == nil {
		fmt.Printf("fn: init/error status=%d\n", res.StatusCode)
		res.Body.Close()
	}
	os.Exit(1)
}

func main() {
	fmt.Println("fn: init")
	if msg := os.Getenv("FN_INIT_ERROR"); msg != "" {
		reportInitError(msg)
	}
	if os.Getenv("FN_SIGTERM") == "1" {
		lambda.StartWithOptions(handle, lambda.WithEnableSIGTERM(func() { fmt.Println("fn: SIGTERM") }))
		return
	}
	lambda.Start(handle)
}
