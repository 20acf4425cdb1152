// Command ext is the test extension for package lambdaemu. It uses only
// net/http, and its behaviour depends on its file name (the extension's
// name):
//
//	ok*        register for INVOKE and SHUTDOWN, log every event, exit on SHUTDOWN
//	sleepy*    like ok, but sleep 1s between register and the first next
//	bad*       register, then report init/error Extension.ConfigInvalid and exit 1
//	slow*      like ok, but ignore SHUTDOWN (and SIGTERM) and keep running
//	nonext*    register, then never call next
//	wrongname* register with a name that is not its file name
//	invoke*    register for INVOKE only
//	none*      register for no events at all
//
// Each event is logged as one line:
//
//	event type=INVOKE request=<id> deadline_ms=<ms> now_ms=<ms> arn=<arn> trace=<value> reason=
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

var base = "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2020-01-01/extension/"

type event struct {
	EventType          string `json:"eventType"`
	DeadlineMs         int64  `json:"deadlineMs"`
	RequestID          string `json:"requestId"`
	InvokedFunctionArn string `json:"invokedFunctionArn"`
	ShutdownReason     string `json:"shutdownReason"`
	Tracing            struct {
		Type  string `json:"type"`
		Value string `json:"value"`
	} `json:"tracing"`
}

func main() {
	name := filepath.Base(os.Args[0])
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "EPHEMERA_") || strings.HasPrefix(kv, "_") ||
			strings.HasPrefix(kv, "LAMBDA_") || strings.HasPrefix(kv, "TZ=") || strings.HasPrefix(kv, "LEAK_") {
			fmt.Printf("env %s\n", kv)
		}
	}
	mode := func(prefix string) bool { return strings.HasPrefix(name, prefix) }

	regName := name
	if mode("wrongname") {
		regName = "not-" + name
	}
	events := []string{"INVOKE", "SHUTDOWN"}
	switch {
	case mode("invoke"):
		events = []string{"INVOKE"}
	case mode("none"):
		events = []string{}
	}
	body, _ := json.Marshal(map[string][]string{"events": events})
	req, _ := http.NewRequest(http.MethodPost, base+"register", bytes.NewReader(body))
	req.Header.Set("Lambda-Extension-Name", regName)
	req.Header.Set("Lambda-Extension-Accept-Feature", "accountId")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Printf("register: %v\n", err)
		os.Exit(1)
	}
	rb, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		fmt.Printf("register failed status=%d body=%s\n", res.StatusCode, rb)
		os.Exit(1)
	}
	id := res.Header.Get("Lambda-Extension-Identifier")
	fmt.Printf("registered id=%s body=%s\n", id, rb)

	switch {
	case mode("bad"):
		eb := `{"errorMessage":"EPHEMERA_BROKER_URL is not set","errorType":"Extension.ConfigInvalid","stackTrace":[]}`
		req, _ := http.NewRequest(http.MethodPost, base+"init/error", strings.NewReader(eb))
		req.Header.Set("Lambda-Extension-Identifier", id)
		req.Header.Set("Lambda-Extension-Function-Error-Type", "Extension.ConfigInvalid")
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			fmt.Printf("init/error status=%d body=%s\n", res.StatusCode, b)
		}
		os.Exit(1)
	case mode("nonext"):
		select {}
	case mode("sleepy"):
		time.Sleep(time.Second)
	case mode("slow"):
		signal.Ignore(syscall.SIGTERM)
	}

	var last int64
	for {
		req, _ := http.NewRequest(http.MethodGet, base+"event/next", nil)
		req.Header.Set("Lambda-Extension-Identifier", id)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Printf("next: %v\n", err)
			os.Exit(1)
		}
		var ev event
		err = json.NewDecoder(res.Body).Decode(&ev)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || err != nil {
			fmt.Printf("next failed status=%d err=%v\n", res.StatusCode, err)
			os.Exit(1)
		}
		now := time.Now().UnixMilli()
		gap := int64(0)
		if last != 0 {
			gap = now - last
		}
		last = now
		fmt.Printf("event type=%s request=%s deadline_ms=%d now_ms=%d gap_ms=%d arn=%s trace=%s reason=%s eventid=%s\n",
			ev.EventType, ev.RequestID, ev.DeadlineMs, now, gap, ev.InvokedFunctionArn, ev.Tracing.Value,
			ev.ShutdownReason, res.Header.Get("Lambda-Extension-Event-Identifier"))
		if ev.EventType == "SHUTDOWN" {
			if mode("slow") {
				fmt.Println("ignoring SHUTDOWN")
				select {}
			}
			fmt.Println("exiting")
			os.Exit(0)
		}
	}
}
