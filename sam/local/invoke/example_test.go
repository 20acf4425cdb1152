package invoke_test

import (
	"context"
	"log"
	"net/http"
	"os"

	"github.com/ephemera-sh/ephemera/sam/local/invoke"
)

// Run the Python demo function once with its committed env.json and event,
// as `ephemera local invoke` does. (Compiled, not run: it starts PostgreSQL.)
func Example() {
	ctx := context.Background()
	ev, err := invoke.ReadEnvVars("functions/demo-python/local/env.json")
	if err != nil {
		log.Fatal(err)
	}
	event, err := os.ReadFile("functions/demo-python/local/event.json")
	if err != nil {
		log.Fatal(err)
	}
	fn, err := invoke.Start(ctx, invoke.Options{Command: []string{"functions/demo-python"}, EnvVars: ev, Logs: os.Stderr})
	if err != nil {
		log.Fatal(err)
	}
	defer fn.Close()
	res, err := fn.Invoke(ctx, event)
	if err != nil {
		log.Fatal(err)
	}
	os.Stdout.Write(res.Payload)
}

// Keep the function warm behind the Lambda Invoke API, as `ephemera local
// start` does.
func ExampleFunction_InvokeAPI() {
	ctx := context.Background()
	fn, err := invoke.Start(ctx, invoke.Options{Command: []string{"functions/demo-node"}, Logs: os.Stderr})
	if err != nil {
		log.Fatal(err)
	}
	defer fn.Close()
	log.Fatal(http.ListenAndServe("127.0.0.1:3001", fn.InvokeAPI()))
}
