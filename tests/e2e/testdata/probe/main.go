// Command probe is a test function for the end-to-end tests: unlike
// functions/demo it survives an INIT without credentials (the extension's
// lazy mode), and reports on every invocation what reading the credential
// and logging in with it gave. It never prints a secret.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/jackc/pgx/v5"

	"github.com/ephemera-sh/ephemera/extension/client"
)

// answer is the invocation's response.
type answer struct {
	OK          bool   `json:"ok"`
	Status      int    `json:"status,omitempty"` // the extension's HTTP status on failure
	Code        string `json:"code,omitempty"`   // the extension's error code on failure
	Error       string `json:"error,omitempty"`
	CurrentUser string `json:"current_user,omitempty"`
	InitRead    string `json:"init_read"` // "ok" or the error code of the read during INIT
}

var initRead string

func read(ctx context.Context) answer {
	cred, err := client.Credentials(ctx, "orders")
	if err != nil {
		a := answer{Error: err.Error()}
		var ce *client.Error
		if errors.As(err, &ce) {
			a.Status, a.Code = ce.StatusCode, ce.Code
		}
		return a
	}
	conn, err := pgx.Connect(ctx, cred.DSN)
	if err != nil {
		return answer{Error: "login refused"} // pgx errors may quote the connection string
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var a answer
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&a.CurrentUser); err != nil {
		return answer{Error: "query failed"}
	}
	a.OK = true
	return a
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	a := read(ctx)
	cancel()
	initRead = "ok"
	if !a.OK {
		initRead = fmt.Sprintf("%d %s", a.Status, a.Code)
	}
	fmt.Fprintln(os.Stderr, "probe: init read:", initRead)
	lambda.Start(func(ctx context.Context) (answer, error) {
		a := read(ctx)
		a.InitRead = initRead
		return a, nil
	})
}
