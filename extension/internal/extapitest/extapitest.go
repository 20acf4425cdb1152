// Package extapitest is a scripted Lambda Extensions API for the extension's tests: it
// registers one extension, hands out the events a test queues, and records error reports.
package extapitest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
)

// ID is the identifier the server hands out.
const ID = "0c3f3c5e-extension-id"

// Report is an /init/error or /exit/error the server received.
type Report struct {
	Path, ID, ErrorType, Message string
}

// Server is the fake API.
type Server struct {
	srv    *httptest.Server
	events chan string
	nexts  chan struct{}

	mu         sync.Mutex
	name       string
	registered []string
	reports    []Report
	register   int
}

// Start serves a fake API until tb's cleanup.
func Start(tb testing.TB) *Server {
	s := &Server{events: make(chan string, 16), nexts: make(chan struct{}, 64)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2020-01-01/extension/register", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Events []string `json:"events"`
		}
		if !decode(w, r, &body) {
			return
		}
		s.mu.Lock()
		s.register++
		s.name, s.registered = r.Header.Get("Lambda-Extension-Name"), body.Events
		s.mu.Unlock()
		w.Header().Set("Lambda-Extension-Identifier", ID)
		_, _ = io.WriteString(w, `{"functionName":"orders-fn","functionVersion":"$LATEST","handler":"bootstrap"}`)
	})
	mux.HandleFunc("GET /2020-01-01/extension/event/next", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Lambda-Extension-Identifier") != ID {
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"errorMessage":"invalid extension identifier","errorType":"Extension.InvalidExtensionIdentifier"}`)
			return
		}
		select {
		case s.nexts <- struct{}{}:
		default:
		}
		select {
		case ev := <-s.events:
			_, _ = io.WriteString(w, ev)
		case <-r.Context().Done():
		}
	})
	for _, p := range []string{"/init/error", "/exit/error"} {
		mux.HandleFunc("POST /2020-01-01/extension"+p, func(w http.ResponseWriter, r *http.Request) {
			var doc struct {
				ErrorMessage string   `json:"errorMessage"`
				ErrorType    string   `json:"errorType"`
				StackTrace   []string `json:"stackTrace"`
			}
			if !decode(w, r, &doc) {
				return
			}
			s.mu.Lock()
			s.reports = append(s.reports, Report{p, r.Header.Get("Lambda-Extension-Identifier"), r.Header.Get("Lambda-Extension-Function-Error-Type"), doc.ErrorMessage})
			s.mu.Unlock()
			w.WriteHeader(http.StatusAccepted)
			_, _ = io.WriteString(w, `{"status":"OK"}`)
		})
	}
	s.srv = httptest.NewServer(mux)
	tb.Cleanup(func() {
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
	return s
}

// Addr is host:port, the value of AWS_LAMBDA_RUNTIME_API.
func (s *Server) Addr() string { return strings.TrimPrefix(s.srv.URL, "http://") }

// Invoke queues an INVOKE event with the given deadline.
func (s *Server) Invoke(requestID string, deadline time.Time) {
	s.events <- `{"eventType":"INVOKE","deadlineMs":` + itoa(deadline.UnixMilli()) + `,"requestId":"` + requestID +
		`","invokedFunctionArn":"arn:aws:lambda:us-east-1:123456789012:function:orders-fn","tracing":{"type":"X-Amzn-Trace-Id","value":"Root=1-5759e988-bd862e3fe1be46a994272793"}}`
}

// Shutdown queues a SHUTDOWN event with the given deadline.
func (s *Server) Shutdown(reason string, deadline time.Time) {
	s.events <- `{"eventType":"SHUTDOWN","shutdownReason":"` + reason + `","deadlineMs":` + itoa(deadline.UnixMilli()) + `}`
}

// Queue queues a raw event document.
func (s *Server) Queue(doc string) { s.events <- doc }

// WaitNext waits until an extension has called /event/next (again), or timeout passes.
func (s *Server) WaitNext(timeout time.Duration) bool {
	select {
	case <-s.nexts:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Registration returns the name and events of the last registration, and how many
// registrations there were.
func (s *Server) Registration() (name string, events []string, count int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.name, append([]string(nil), s.registered...), s.register
}

// Reports returns the error reports received.
func (s *Server) Reports() []Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Report(nil), s.reports...)
}

// decode reads the request body strictly (api.Unmarshal), as Lambda would refuse what it
// cannot read; a body it refuses is answered 400 with Lambda's error document.
func decode(w http.ResponseWriter, r *http.Request, dst any) bool {
	data, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err == nil {
		err = api.Unmarshal(data, dst)
	}
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"errorMessage":"invalid request body","errorType":"InvalidRequestPayload"}`)
		return false
	}
	return true
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }
