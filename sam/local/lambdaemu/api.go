package lambdaemu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Header names of the Runtime API (2018-06-01) and the Extensions API
// (2020-01-01).
const (
	headerRequestID          = "Lambda-Runtime-Aws-Request-Id"
	headerDeadlineMs         = "Lambda-Runtime-Deadline-Ms"
	headerInvokedFunctionArn = "Lambda-Runtime-Invoked-Function-Arn"
	headerTraceID            = "Lambda-Runtime-Trace-Id"
	headerRuntimeErrorType   = "Lambda-Runtime-Function-Error-Type"

	headerExtensionName      = "Lambda-Extension-Name"
	headerExtensionID        = "Lambda-Extension-Identifier"
	headerExtensionErrorType = "Lambda-Extension-Function-Error-Type"
	headerExtensionEventID   = "Lambda-Extension-Event-Identifier"
	headerAcceptFeature      = "Lambda-Extension-Accept-Feature"
)

// Error types the APIs answer with (those of the reference implementation,
// aws-lambda-runtime-interface-emulator).
const (
	apiErrInvalidName        = "Extension.InvalidExtensionName"
	apiErrRegistrationClosed = "Extension.RegistrationClosed"
	apiErrMissingIdentifier  = "Extension.MissingExtensionIdentifier"
	apiErrInvalidIdentifier  = "Extension.InvalidExtensionIdentifier"
	apiErrUnknownIdentifier  = "Extension.UnknownExtensionIdentifier"
	apiErrInvalidState       = "Extension.InvalidExtensionState"
	apiErrMissingHeader      = "Extension.MissingHeader"
	apiErrTooManyExtensions  = "Extension.TooManyExtensions"
	apiErrInvalidEventType   = "Extension.InvalidEventType"
	apiErrInvalidRequest     = "InvalidRequestFormat"
	apiErrInvalidRequestID   = "InvalidRequestID"
	apiErrInvalidTransition  = "InvalidStateTransition"
	apiErrTooLarge           = "RequestEntityTooLarge"
	apiErrInternal           = "InternalServerError"
	apiErrNotFound           = "NotFound"
)

const (
	maxErrorBody             = 1 << 20
	maxRegisterBody          = 64 << 10
	runtimeInitErrorFallback = "Runtime.Unknown"
)

func (e *Emulator) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /2020-01-01/extension/register", e.handleRegister)
	mux.HandleFunc("GET /2020-01-01/extension/event/next", e.handleExtensionNext)
	mux.HandleFunc("POST /2020-01-01/extension/init/error", e.handleExtensionError(true))
	mux.HandleFunc("POST /2020-01-01/extension/exit/error", e.handleExtensionError(false))
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", e.handleRuntimeNext)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", e.handleRuntimeResponse)
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/error", e.handleRuntimeError)
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", e.handleRuntimeInitError)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, apiErrNotFound, "no such API: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError answers the documented error document
// {"errorMessage","errorType"}.
func writeError(w http.ResponseWriter, status int, typ, msg string) {
	writeJSON(w, status, struct {
		ErrorMessage string `json:"errorMessage"`
		ErrorType    string `json:"errorType"`
	}{msg, typ})
}

// writeAccepted answers 202 {"status":"OK"}.
func writeAccepted(w http.ResponseWriter) {
	writeJSON(w, http.StatusAccepted, struct {
		Status string `json:"status"`
	}{"OK"})
}

// errorBody is the documented error request body
// {"errorMessage","errorType","stackTrace"}.
type errorBody struct {
	ErrorMessage string `json:"errorMessage"`
	ErrorType    string `json:"errorType"`
}

func parseErrorBody(b []byte) errorBody {
	var eb errorBody
	_ = json.Unmarshal(b, &eb) // the body is optional and free-form
	return eb
}

// handleRegister serves POST /2020-01-01/extension/register.
func (e *Emulator) handleRegister(w http.ResponseWriter, r *http.Request) {
	name := r.Header.Get(headerExtensionName)
	if name == "" {
		writeError(w, http.StatusForbidden, apiErrInvalidName, "Empty extension name")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRegisterBody))
	if err != nil {
		writeError(w, http.StatusBadRequest, apiErrInvalidRequest, err.Error())
		return
	}
	var req struct {
		Events []string `json:"events"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			writeError(w, http.StatusBadRequest, apiErrInvalidRequest, "invalid register body: "+err.Error())
			return
		}
	}
	var events []string
	for _, ev := range req.Events {
		if ev != eventInvoke && ev != eventShutdown {
			writeError(w, http.StatusBadRequest, apiErrInvalidEventType,
				fmt.Sprintf("%s: unknown event type (valid: INVOKE, SHUTDOWN)", ev))
			return
		}
		if !slices.Contains(events, ev) {
			events = append(events, ev)
		}
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	sb := e.sb
	reject := func(status int, typ, msg string) {
		e.recordLocked("register rejected %s type=%s", name, typ)
		writeError(w, status, typ, msg)
	}
	if e.closed || sb == nil || !sb.phase.initializing() {
		reject(http.StatusForbidden, apiErrRegistrationClosed, "Extension registration closed already")
		return
	}
	x := sb.extByName(name)
	switch {
	case x != nil && x.id != "":
		reject(http.StatusForbidden, apiErrInvalidState, fmt.Sprintf("extension %s is already registered", name))
		return
	case x != nil: // an external extension registering
	case sb.phase == phaseExtensionInit:
		reject(http.StatusForbidden, apiErrInvalidName,
			fmt.Sprintf("%q is not the file name of an extension in %s", name, e.cfg.ExtensionsDir))
		return
	default: // registered from the runtime process during runtime init
		if slices.Contains(events, eventShutdown) {
			reject(http.StatusBadRequest, apiErrInvalidEventType, "internal extensions cannot register for SHUTDOWN")
			return
		}
		x = &extension{name: name, internal: true}
	}
	if sb.registered() >= maxExtensions {
		reject(http.StatusForbidden, apiErrTooManyExtensions, fmt.Sprintf("Extension limit (%d) reached", maxExtensions))
		return
	}
	if x.internal {
		sb.exts = append(sb.exts, x)
	}
	x.id = newUUID()
	x.events = events
	kind := ""
	if x.internal {
		kind = " internal"
	}
	e.recordLocked("register %s id=%s events=%s%s", name, x.id, strings.Join(events, ","), kind)
	e.notifyLocked()

	resp := map[string]string{
		"functionName":    e.cfg.FunctionName,
		"functionVersion": "$LATEST",
		"handler":         Handler,
	}
	if strings.Contains(r.Header.Get(headerAcceptFeature), "accountId") {
		resp["accountId"] = AccountID
	}
	w.Header().Set(headerExtensionID, x.id)
	writeJSON(w, http.StatusOK, resp)
}

// extensionFromRequestLocked finds the extension named by the
// Lambda-Extension-Identifier header, or answers the error and returns nil.
func (e *Emulator) extensionFromRequestLocked(w http.ResponseWriter, r *http.Request) *extension {
	id := r.Header.Get(headerExtensionID)
	switch {
	case id == "":
		writeError(w, http.StatusForbidden, apiErrMissingIdentifier, "Missing Lambda-Extension-Identifier header")
		return nil
	case !isUUID(id):
		writeError(w, http.StatusForbidden, apiErrInvalidIdentifier, "Invalid Lambda-Extension-Identifier")
		return nil
	}
	var x *extension
	if e.sb != nil {
		x = e.sb.extByID(id)
	}
	if x == nil {
		writeError(w, http.StatusForbidden, apiErrUnknownIdentifier, "Unknown extension "+id)
		return nil
	}
	return x
}

// handleExtensionNext serves GET /2020-01-01/extension/event/next: it blocks
// until the next event for this extension.
func (e *Emulator) handleExtensionNext(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	x := e.extensionFromRequestLocked(w, r)
	if x == nil {
		e.mu.Unlock()
		return
	}
	sb := e.sb
	if x.initErr != nil || x.exitErr != nil {
		e.mu.Unlock()
		writeError(w, http.StatusForbidden, apiErrInvalidState,
			fmt.Sprintf("extension %s reported an error; no further API calls succeed", x.name))
		return
	}
	x.waiters++
	e.recordLocked("extension next %s", x.name)
	e.notifyLocked()
	for {
		if len(x.queue) > 0 {
			ev := x.queue[0]
			x.queue = x.queue[1:]
			x.waiters--
			detail := ev.RequestID
			if ev.EventType == eventShutdown {
				detail = ev.ShutdownReason
			}
			e.recordLocked("extension event %s %s %s", x.name, ev.EventType, detail)
			e.notifyLocked()
			e.mu.Unlock()
			w.Header().Set(headerExtensionEventID, newUUID())
			writeJSON(w, http.StatusOK, ev)
			return
		}
		if !e.awaitChangeLocked(w, r, sb, &x.waiters) {
			return
		}
	}
}

// handleExtensionError serves POST /2020-01-01/extension/init/error (init)
// and /exit/error.
func (e *Emulator) handleExtensionError(init bool) http.HandlerFunc {
	what := "exit/error"
	if init {
		what = "init/error"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, maxErrorBody))
		e.mu.Lock()
		defer e.mu.Unlock()
		x := e.extensionFromRequestLocked(w, r)
		if x == nil {
			return
		}
		typ := r.Header.Get(headerExtensionErrorType)
		if typ == "" {
			writeError(w, http.StatusForbidden, apiErrMissingHeader, headerExtensionErrorType+" not found")
			return
		}
		sb := e.sb
		rep := &ErrorReport{ErrorType: typ, Message: parseErrorBody(body).ErrorMessage, Body: body}
		if init {
			if !sb.phase.initializing() || x.initErr != nil {
				writeError(w, http.StatusForbidden, apiErrInvalidState,
					fmt.Sprintf("init/error from %s is only accepted once, during INIT", x.name))
				return
			}
			x.initErr = rep
			if sb.initErr == nil {
				sb.initErr = &InitError{Phase: sb.phase.initName(), ErrorType: typ, Message: rep.Message, Extension: x.name}
			}
		} else {
			if x.exitErr != nil {
				writeError(w, http.StatusForbidden, apiErrInvalidState,
					fmt.Sprintf("exit/error from %s is only accepted once", x.name))
				return
			}
			x.exitErr = rep
		}
		e.recordLocked("extension %s %s type=%s", what, x.name, typ)
		e.notifyLocked()
		w.Header().Set(headerExtensionID, x.id)
		writeAccepted(w)
	}
}

// handleRuntimeNext serves GET /2018-06-01/runtime/invocation/next: it
// blocks until the next invocation.
func (e *Emulator) handleRuntimeNext(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	sb := e.sb
	if e.closed || sb == nil {
		e.mu.Unlock()
		writeError(w, http.StatusInternalServerError, apiErrInternal, "the execution environment is gone")
		return
	}
	rt := &sb.rt
	if rt.current != nil && !rt.current.responded {
		e.mu.Unlock()
		writeError(w, http.StatusForbidden, apiErrInvalidTransition,
			fmt.Sprintf("invocation %s has not been answered", rt.current.id))
		return
	}
	rt.current = nil
	rt.waiters++
	e.recordLocked("runtime next")
	e.notifyLocked()
	for {
		if inv := rt.pending; inv != nil {
			rt.pending = nil
			rt.current = inv
			rt.waiters--
			e.recordLocked("runtime event %s", inv.id)
			e.notifyLocked()
			arn := e.cfg.functionARN()
			e.mu.Unlock()
			h := w.Header()
			h.Set(headerRequestID, inv.id)
			h.Set(headerDeadlineMs, strconv.FormatInt(inv.deadline.UnixMilli(), 10))
			h.Set(headerInvokedFunctionArn, arn)
			h.Set(headerTraceID, inv.traceID)
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(inv.payload)
			return
		}
		if !e.awaitChangeLocked(w, r, sb, &rt.waiters) {
			return
		}
	}
}

// answerInvocationLocked returns the delivered, unanswered invocation with
// the id in the path, marked answered (the caller records the answer), or
// answers 400 InvalidRequestID and returns nil.
func (e *Emulator) answerInvocationLocked(w http.ResponseWriter, r *http.Request) *invocation {
	if e.sb != nil {
		if inv := e.sb.rt.current; inv != nil && inv.id == r.PathValue("id") && !inv.responded {
			inv.responded = true
			return inv
		}
	}
	writeError(w, http.StatusBadRequest, apiErrInvalidRequestID, "Invalid request ID")
	return nil
}

// handleRuntimeResponse serves POST
// /2018-06-01/runtime/invocation/{id}/response.
func (e *Emulator) handleRuntimeResponse(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxPayloadSize+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, apiErrInvalidRequest, err.Error())
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	inv := e.answerInvocationLocked(w, r)
	if inv == nil {
		return
	}
	if len(body) > MaxPayloadSize {
		inv.errorType = ErrorTypeResponseTooLarge
		inv.response = errorPayload(ErrorTypeResponseTooLarge,
			fmt.Sprintf("Response payload size exceeded maximum allowed payload size (%d bytes).", MaxPayloadSize))
		e.recordLocked("runtime response %s too large", inv.id)
		e.notifyLocked()
		writeError(w, http.StatusRequestEntityTooLarge, apiErrTooLarge,
			fmt.Sprintf("Exceeded maximum allowed payload size (%d bytes).", MaxPayloadSize))
		return
	}
	inv.response = body
	e.recordLocked("runtime response %s bytes=%d", inv.id, len(body))
	e.notifyLocked()
	writeAccepted(w)
}

// handleRuntimeError serves POST /2018-06-01/runtime/invocation/{id}/error.
// The error type is the Lambda-Runtime-Function-Error-Type header; as
// aws-lambda-go declares that name as a trailer (set only when reading the
// response fails) and otherwise puts the type in the body, the trailer and
// the body's errorType are the fallbacks.
func (e *Emulator) handleRuntimeError(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxPayloadSize))
	if err != nil {
		writeError(w, http.StatusBadRequest, apiErrInvalidRequest, err.Error())
		return
	}
	typ := r.Header.Get(headerRuntimeErrorType)
	if typ == "" {
		typ = r.Trailer.Get(headerRuntimeErrorType)
	}
	if typ == "" {
		typ = parseErrorBody(body).ErrorType
	}
	if typ == "" {
		typ = ErrorTypeUnhandled
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	inv := e.answerInvocationLocked(w, r)
	if inv == nil {
		return
	}
	inv.response = body
	inv.errorType = typ
	e.recordLocked("runtime error %s type=%s", inv.id, typ)
	e.notifyLocked()
	writeAccepted(w)
}

// handleRuntimeInitError serves POST /2018-06-01/runtime/init/error: INIT
// fails with the reported error.
func (e *Emulator) handleRuntimeInitError(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxErrorBody))
	eb := parseErrorBody(body)
	typ := r.Header.Get(headerRuntimeErrorType)
	if typ == "" {
		typ = eb.ErrorType
	}
	if typ == "" {
		typ = runtimeInitErrorFallback
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	sb := e.sb
	if e.closed || sb == nil || sb.phase != phaseRuntimeInit {
		writeError(w, http.StatusForbidden, apiErrInvalidTransition, "init/error is only accepted during runtime init")
		return
	}
	if sb.initErr == nil {
		sb.initErr = &InitError{Phase: PhaseRuntimeInit, ErrorType: typ, Message: eb.ErrorMessage}
	}
	e.recordLocked("runtime init/error type=%s", typ)
	e.notifyLocked()
	writeAccepted(w)
}

// awaitChangeLocked is the wait of a long-polling handler: called with e.mu
// held, it blocks until the environment changes (and returns true with e.mu
// held again) or gives up — the environment is gone (a 500 answer) or the
// caller left — releasing e.mu and its place in *waiters, and returns false.
func (e *Emulator) awaitChangeLocked(w http.ResponseWriter, r *http.Request, sb *sandbox, waiters *int) bool {
	if e.closed || sb.phase == phaseDead {
		*waiters--
		e.mu.Unlock()
		writeError(w, http.StatusInternalServerError, apiErrInternal, "the execution environment is gone")
		return false
	}
	ch := e.changed
	e.mu.Unlock()
	select {
	case <-ch:
		e.mu.Lock()
		return true
	case <-r.Context().Done():
		e.mu.Lock()
		*waiters--
		e.notifyLocked()
		e.mu.Unlock()
		return false
	}
}
