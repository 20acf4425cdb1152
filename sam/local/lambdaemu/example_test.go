package lambdaemu_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/ephemera-sh/ephemera/sam/local/lambdaemu"
)

// The function and extension binaries are built beforehand (the function
// with -tags lambda.norpc); the extensions directory stands for
// /opt/extensions.
func Example() {
	ctx := context.Background()
	emu, err := lambdaemu.Start(ctx, lambdaemu.Config{
		ExtensionsDir:   "build/opt/extensions",
		Bootstrap:       "build/bootstrap",
		Env:             map[string]string{"EPHEMERA_BROKER_URL": "http://127.0.0.1:8080"},
		AccessKeyID:     "ASIAEXAMPLE",
		SecretAccessKey: "example-secret",
		SessionToken:    "example-token",
		Freeze:          true,
		Output:          os.Stderr,
	})
	if err != nil {
		log.Fatal(err) // an *lambdaemu.InitError if INIT failed
	}
	defer emu.Close()

	res, err := emu.Invoke(ctx, []byte(`{"order":42}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %s\n", res.ErrorType, res.Payload)

	time.Sleep(20 * time.Minute) // frozen: the extension sees the clock jump
	if _, err := emu.Invoke(ctx, []byte(`{"order":43}`)); err != nil {
		log.Fatal(err)
	}

	sr, err := emu.Shutdown(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exited:", sr.Exited, "killed:", sr.Killed)
}
