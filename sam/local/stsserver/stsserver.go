package stsserver

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	// stsNamespace is the XML namespace of STS 2011-06-15 documents.
	stsNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"
	// stsVersion is the only API version accepted.
	stsVersion = "2011-06-15"
	// amzDateFormat is the ISO-8601 basic format used by X-Amz-Date.
	amzDateFormat = "20060102T150405Z"
	// scopeDateFormat is the date part of a credential scope.
	scopeDateFormat = "20060102"
	// maxSkew is how far X-Amz-Date may be from the server clock.
	maxSkew = 15 * time.Minute
	// maxBodyBytes bounds the request body that is read and recorded.
	maxBodyBytes = 1 << 20
	// defaultSlowDelay is how long ModeSlow stalls before answering.
	defaultSlowDelay = 5 * time.Second
	// redirectTarget is the Location of ModeRedirect answers; nothing
	// listens on port 1.
	redirectTarget = "http://127.0.0.1:1/"
	// signingAlgorithm is the only Authorization algorithm accepted.
	signingAlgorithm = "AWS4-HMAC-SHA256"

	msgMissingAuth    = "Request is missing Authentication Token"
	msgInvalidToken   = "The security token included in the request is invalid."
	msgExpiredToken   = "The security token included in the request is expired"
	msgSignatureWrong = "The request signature we calculated does not match the signature you provided. " +
		"Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

// Identity is one entry of the server's key table.
//
// A request signed with AccessKeyID and SecretAccessKey (and, for temporary
// credentials, carrying SessionToken in X-Amz-Security-Token) is answered
// with ARN, UserID and Account.
type Identity struct {
	// AccessKeyID identifies the key, e.g. ASIAEXAMPLE...; it is the key of
	// the server's table.
	AccessKeyID string
	// SecretAccessKey is the signing secret.
	SecretAccessKey string
	// SessionToken is the token of temporary credentials. "" means a
	// long-term key, for which requests must not carry a token.
	SessionToken string
	// ARN is returned as GetCallerIdentityResult/Arn, e.g.
	// arn:aws:sts::123456789012:assumed-role/orders-api-role/orders-fn.
	ARN string
	// Account is returned as GetCallerIdentityResult/Account. It is normally
	// the ARN's account; tests may set a mismatch on purpose.
	Account string
	// UserID is returned as GetCallerIdentityResult/UserId, e.g.
	// AROAEXAMPLE:orders-fn.
	UserID string
	// Expiration is when the key stops working: a request that arrives at
	// or after it (by the server clock, see Server.SetClock) is answered
	// 403 ExpiredToken. The zero time means never. Keys minted by
	// AssumeRole carry the session's expiration.
	Expiration time.Time
}

// Mode selects how the server answers. Whatever the mode, every request is
// recorded first.
type Mode int

const (
	// ModeNormal verifies the request and answers like real STS.
	ModeNormal Mode = iota
	// ModeJSON answers 200 with Content-Type application/json and a JSON
	// GetCallerIdentityResponse body (an AssumeRoleResponse body with
	// unregistered credentials when the body asks for AssumeRole), without
	// verifying the request.
	ModeJSON
	// ModeRedirect answers 307 Temporary Redirect to http://127.0.0.1:1/.
	ModeRedirect
	// ModeSlow waits 5 seconds (returning early, without an answer, if the
	// request's context ends) and then verifies and answers normally.
	ModeSlow
	// ModeUnavailable answers 503 with a ServiceUnavailable XML error.
	ModeUnavailable
	// ModeDoubleResult answers 200 text/xml with two
	// GetCallerIdentityResult elements (two AssumeRoleResult elements with
	// different, unregistered credentials when the body asks for
	// AssumeRole), without verifying the request.
	ModeDoubleResult
)

// String returns the constant's name.
func (m Mode) String() string {
	switch m {
	case ModeNormal:
		return "ModeNormal"
	case ModeJSON:
		return "ModeJSON"
	case ModeRedirect:
		return "ModeRedirect"
	case ModeSlow:
		return "ModeSlow"
	case ModeUnavailable:
		return "ModeUnavailable"
	case ModeDoubleResult:
		return "ModeDoubleResult"
	default:
		return "Mode(" + strconv.Itoa(int(m)) + ")"
	}
}

// Request is a recorded request, as it arrived.
type Request struct {
	// Time is the server clock (see Server.SetClock) at arrival.
	Time time.Time
	// Method is the HTTP method.
	Method string
	// Host is the Host header, which may name real STS when the request was
	// forwarded.
	Host string
	// Path is the decoded URL path.
	Path string
	// RawQuery is the encoded query string, without '?'.
	RawQuery string
	// Header is a copy of the request headers.
	Header http.Header
	// Body is a copy of the body (at most 1 MiB).
	Body []byte
}

func (r Request) clone() Request {
	r.Header = r.Header.Clone()
	r.Body = bytes.Clone(r.Body)
	return r
}

// Server is a local STS. It is an http.Handler; Start additionally serves
// it on a loopback port. All methods are safe for concurrent use.
type Server struct {
	mu        sync.Mutex
	ids       map[string]Identity
	roles     map[string]roleEntry
	sessions  []Session
	bySession map[string]int // minted AccessKeyID -> index in sessions
	disabled  map[string]bool
	mode      Mode
	now       func() time.Time
	requests  []Request
	slowDelay time.Duration

	// Set by Start.
	httpSrv *http.Server
	url     string
	served  chan struct{}
	closed  bool
}

// New returns a server that knows ids. It is not listening; use it as an
// http.Handler or call Start instead.
func New(ids ...Identity) *Server {
	s := &Server{
		ids:       make(map[string]Identity, len(ids)),
		roles:     make(map[string]roleEntry),
		bySession: make(map[string]int),
		disabled:  make(map[string]bool),
		now:       time.Now,
		slowDelay: defaultSlowDelay,
	}
	for _, id := range ids {
		s.ids[id.AccessKeyID] = id
	}
	return s
}

// Start returns a server that knows ids and listens on 127.0.0.1 on a free
// port. Call Close to stop it.
func Start(ids ...Identity) (*Server, error) {
	s := New(ids...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stsserver: listen: %w", err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	s.mu.Lock()
	s.httpSrv = srv
	s.url = "http://" + ln.Addr().String()
	s.served = served
	s.mu.Unlock()
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	return s, nil
}

// TB is the part of testing.TB that StartTB uses.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// StartTB is Start for tests: it fails tb if the server cannot start and
// closes the server when tb's cleanups run.
func StartTB(tb TB, ids ...Identity) *Server {
	tb.Helper()
	s, err := Start(ids...)
	if err != nil {
		tb.Fatalf("stsserver: %v", err)
		return nil
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// URL returns the base URL, "http://127.0.0.1:PORT", of a server made by
// Start, or "" for a server made by New.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Close stops a server made by Start, closing its listener and open
// connections, and waits for its accept loop to end. It is a no-op for a
// server made by New and on later calls.
func (s *Server) Close() error {
	s.mu.Lock()
	srv, served, closed := s.httpSrv, s.served, s.closed
	s.closed = true
	s.mu.Unlock()
	if srv == nil || closed {
		return nil
	}
	err := srv.Close()
	<-served
	return err
}

// Add adds id to the key table, replacing any identity with the same
// AccessKeyID.
func (s *Server) Add(id Identity) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids[id.AccessKeyID] = id
}

// SetMode selects how later requests are answered.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// SetClock sets the clock used for freshness checks and for Request.Time.
// nil restores the default, time.Now.
func (s *Server) SetClock(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// Requests returns copies of the recorded requests, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneAll(s.requests)
}

// cloneAll returns deep copies of xs (Requests and Sessions hold slices and maps
// the caller must not share with the server).
func cloneAll[T interface{ clone() T }](xs []T) []T {
	out := make([]T, len(xs))
	for i, x := range xs {
		out[i] = x.clone()
	}
	return out
}

// RequestCount returns the number of recorded requests.
func (s *Server) RequestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// Reset forgets the recorded requests.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// ServeHTTP records the request and answers it according to the mode.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, readErr := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	tooLarge := len(body) > maxBodyBytes
	if tooLarge {
		body = body[:maxBodyBytes]
	}

	s.mu.Lock()
	clock, mode, delay := s.now, s.mode, s.slowDelay
	s.mu.Unlock()
	arrival := clock()
	rec := Request{
		Time:     arrival,
		Method:   r.Method,
		Host:     r.Host,
		Path:     r.URL.Path,
		RawQuery: r.URL.RawQuery,
		Header:   r.Header.Clone(),
		Body:     bytes.Clone(body),
	}
	s.mu.Lock()
	s.requests = append(s.requests, rec)
	s.mu.Unlock()

	requestID := newRequestID()
	w.Header().Set("X-Amzn-Requestid", requestID)

	assumeRole := isAssumeRoleBody(body)
	switch mode {
	case ModeJSON:
		if assumeRole {
			writeAssumeRoleJSON(w, fakeAssumeRoleResult(body, false), requestID)
			return
		}
		writeJSON(w, s.identityForAnswer(r), requestID)
		return
	case ModeRedirect:
		w.Header().Set("Location", redirectTarget)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	case ModeUnavailable:
		writeError(w, &apiError{
			status:  http.StatusServiceUnavailable,
			typ:     "Receiver",
			code:    "ServiceUnavailable",
			message: "Service is unavailable. Please try again later.",
		}, requestID)
		return
	case ModeDoubleResult:
		if assumeRole {
			writeXML(w, http.StatusOK, assumeRoleResponse{
				Xmlns:    stsNamespace,
				Results:  []assumeRoleResult{fakeAssumeRoleResult(body, false), fakeAssumeRoleResult(body, true)},
				Metadata: responseMetadata{RequestID: requestID},
			})
			return
		}
		first := s.identityForAnswer(r)
		second := Identity{
			ARN:     "arn:aws:sts::999999999999:assumed-role/injected-role/injected-session",
			Account: "999999999999",
			UserID:  "AROAINJECTEDEXAMPLE1:injected-session",
		}
		writeXML(w, http.StatusOK, newResult(requestID, first, second))
		return
	case ModeSlow:
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
		// The verification below uses the clock after the delay.
		arrival = clock()
	}

	switch {
	case readErr != nil:
		writeError(w, sender(http.StatusBadRequest, "MalformedInput", "The request body could not be read."), requestID)
		return
	case tooLarge:
		writeError(w, sender(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "The request body is too large."), requestID)
		return
	}

	c, aerr := s.verify(r, body, arrival)
	if aerr != nil {
		writeError(w, aerr, requestID)
		return
	}
	switch c.action {
	case actionAssumeRole:
		res, aerr := s.assumeRole(c, arrival)
		if aerr != nil {
			writeError(w, aerr, requestID)
			return
		}
		writeXML(w, http.StatusOK, assumeRoleResponse{
			Xmlns:    stsNamespace,
			Results:  []assumeRoleResult{res},
			Metadata: responseMetadata{RequestID: requestID},
		})
	default:
		writeXML(w, http.StatusOK, newResult(requestID, c.id))
	}
}

// identityForAnswer returns the identity whose access key the request's
// Authorization header names, without verifying anything, or a
// placeholder. It feeds the modes that replace the answer.
func (s *Server) identityForAnswer(r *http.Request) Identity {
	if a, err := parseAuthorization(r.Header.Get("Authorization")); err == nil {
		s.mu.Lock()
		id, ok := s.ids[a.accessKeyID]
		s.mu.Unlock()
		if ok {
			return id
		}
	}
	return Identity{
		ARN:     "arn:aws:sts::000000000000:assumed-role/unknown-role/unknown-session",
		Account: "000000000000",
		UserID:  "AROAUNKNOWNEXAMPLE00:unknown-session",
	}
}

// apiError is an STS error answer.
type apiError struct {
	status  int
	typ     string // Sender or Receiver
	code    string
	message string
}

func sender(status int, code, message string) *apiError {
	return &apiError{status: status, typ: "Sender", code: code, message: message}
}

func incompleteSignature(message string) *apiError {
	return sender(http.StatusBadRequest, "IncompleteSignature", message)
}

func signatureDoesNotMatch(message string) *apiError {
	return sender(http.StatusForbidden, "SignatureDoesNotMatch", message)
}

func invalidClientTokenID() *apiError {
	return sender(http.StatusForbidden, "InvalidClientTokenId", msgInvalidToken)
}

// Supported actions.
const (
	actionGetCallerIdentity = "GetCallerIdentity"
	actionAssumeRole        = "AssumeRole"
)

// caller is a verified request: who signed it, for which region, and what
// it asks for.
type caller struct {
	id     Identity
	region string // of the credential scope
	action string
	form   url.Values
}

// verify checks r (whose body is body) at time now and returns the
// identity that signed it with the request's parameters. Messages never
// include the secret key, the session token or the signature.
func (s *Server) verify(r *http.Request, body []byte, now time.Time) (caller, *apiError) {
	// 1. POST with a form body.
	if r.Method != http.MethodPost {
		return caller{}, sender(http.StatusBadRequest, "InvalidAction",
			"Only POST requests with an application/x-www-form-urlencoded body are supported.")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return caller{}, sender(http.StatusBadRequest, "InvalidAction",
				"Only POST requests with an application/x-www-form-urlencoded body are supported.")
		}
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return caller{}, sender(http.StatusBadRequest, "MalformedQueryString",
			"The request body is not a valid application/x-www-form-urlencoded form.")
	}

	// 2. Authorization header.
	authz := r.Header.Values("Authorization")
	if len(authz) == 0 || strings.TrimSpace(authz[0]) == "" {
		return caller{}, sender(http.StatusForbidden, "MissingAuthenticationToken", msgMissingAuth)
	}
	if len(authz) > 1 {
		return caller{}, incompleteSignature("Request must contain exactly one Authorization header.")
	}
	a, err := parseAuthorization(authz[0])
	if err != nil {
		return caller{}, incompleteSignature(err.Error())
	}

	// 3. Access key and session token.
	s.mu.Lock()
	id, ok := s.ids[a.accessKeyID]
	s.mu.Unlock()
	if !ok {
		return caller{}, invalidClientTokenID()
	}
	tokens := r.Header.Values("X-Amz-Security-Token")
	if id.SessionToken == "" {
		if len(tokens) > 0 {
			return caller{}, invalidClientTokenID()
		}
	} else if len(tokens) != 1 || subtle.ConstantTimeCompare([]byte(tokens[0]), []byte(id.SessionToken)) != 1 {
		return caller{}, invalidClientTokenID()
	}
	// The key and its token are genuine; temporary keys stop working at
	// their expiration.
	if !id.Expiration.IsZero() && !now.Before(id.Expiration) {
		return caller{}, sender(http.StatusForbidden, "ExpiredToken", msgExpiredToken)
	}

	// 4. Date, credential scope and signed headers.
	dates := r.Header.Values("X-Amz-Date")
	if len(dates) == 0 {
		return caller{}, incompleteSignature("Authorization header requires existence of a 'X-Amz-Date' header.")
	}
	if len(dates) > 1 {
		return caller{}, incompleteSignature("Request must contain exactly one 'X-Amz-Date' header.")
	}
	amzTime, err := time.Parse(amzDateFormat, dates[0])
	if err != nil || amzTime.Format(amzDateFormat) != dates[0] {
		return caller{}, incompleteSignature(fmt.Sprintf(
			"Date must be in ISO-8601 'basic format'. Got '%s'.", truncate(dates[0], 64)))
	}
	if a.date != amzTime.Format(scopeDateFormat) {
		return caller{}, signatureDoesNotMatch(fmt.Sprintf(
			"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.",
			truncate(a.date, 64), amzTime.Format(scopeDateFormat), dates[0]))
	}
	if a.service != "sts" {
		return caller{}, signatureDoesNotMatch(fmt.Sprintf(
			"Credential should be scoped to correct service: 'sts', not '%s'.", truncate(a.service, 64)))
	}
	if a.terminator != "aws4_request" {
		return caller{}, signatureDoesNotMatch(fmt.Sprintf(
			"Credential should be scoped with a valid terminator: 'aws4_request', not '%s'.", truncate(a.terminator, 64)))
	}
	if !a.signs("host") {
		return caller{}, incompleteSignature("'Host' must be a 'SignedHeader' in the AWS Authorization.")
	}
	if !a.signs("x-amz-date") {
		return caller{}, incompleteSignature("'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.")
	}
	if len(tokens) > 0 && !a.signs("x-amz-security-token") {
		return caller{}, incompleteSignature("'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.")
	}

	// 5. Freshness.
	now = now.UTC()
	if earliest := now.Add(-maxSkew); amzTime.Before(earliest) {
		return caller{}, signatureDoesNotMatch(fmt.Sprintf(
			"Signature expired: %s is now earlier than %s (%s - 15 min.)",
			dates[0], earliest.Format(amzDateFormat), now.Format(amzDateFormat)))
	}
	if latest := now.Add(maxSkew); amzTime.After(latest) {
		return caller{}, signatureDoesNotMatch(fmt.Sprintf(
			"Signature not yet current: %s is still later than %s (%s + 15 min.)",
			dates[0], latest.Format(amzDateFormat), now.Format(amzDateFormat)))
	}

	// 6. Signature.
	if !signatureMatches(r, body, a, id, amzTime) {
		return caller{}, signatureDoesNotMatch(msgSignatureWrong)
	}

	// 7. Action and Version.
	var action string
	switch actions := form["Action"]; {
	case len(actions) == 0 || actions[0] == "":
		return caller{}, sender(http.StatusBadRequest, "MissingAction", "Missing Action")
	case len(actions) > 1:
		return caller{}, sender(http.StatusBadRequest, "InvalidAction", "The request must contain exactly one Action.")
	case actions[0] != actionGetCallerIdentity && actions[0] != actionAssumeRole:
		return caller{}, sender(http.StatusBadRequest, "InvalidAction", fmt.Sprintf(
			"Could not find operation %s for version %s", truncate(actions[0], 64), stsVersion))
	default:
		action = actions[0]
	}
	switch versions := form["Version"]; {
	case len(versions) == 0 || versions[0] == "":
		return caller{}, sender(http.StatusBadRequest, "MissingParameter",
			"The request must contain the parameter Version.")
	case len(versions) > 1 || versions[0] != stsVersion:
		return caller{}, sender(http.StatusBadRequest, "InvalidAction", fmt.Sprintf(
			"Could not find operation %s for version %s", action, truncate(versions[0], 64)))
	}
	return caller{id: id, region: a.region, action: action, form: form}, nil
}

// signatureMatches re-signs the request with the aws-sdk-go-v2 SigV4 signer
// and compares the result with what the client sent.
func signatureMatches(r *http.Request, body []byte, a authorization, id Identity, amzTime time.Time) bool {
	// The signer drops a port that is the default for the URL's scheme
	// (SanitizeHostForHeader). The client's signer did the same before
	// sending, so a port that arrives in Host was signed: pick the scheme
	// for which it is not the default.
	scheme := "https"
	if _, port, err := net.SplitHostPort(r.Host); err == nil && port == "443" {
		scheme = "http"
	}
	req := &http.Request{
		Method: r.Method,
		URL: &url.URL{
			Scheme:   scheme,
			Host:     r.Host,
			Path:     r.URL.Path,
			RawPath:  r.URL.RawPath,
			RawQuery: r.URL.RawQuery,
		},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Host:       r.Host,
		Header:     make(http.Header),
		Body:       io.NopCloser(bytes.NewReader(body)),
	}
	// The signer signs content-length from ContentLength (when > 0), never
	// from the header, so reproduce it only if the client signed it.
	if a.signs("content-length") {
		req.ContentLength = int64(len(body))
	}
	for _, name := range a.signedHeaders {
		if name == "host" || name == "content-length" {
			continue
		}
		if vs := r.Header.Values(name); len(vs) > 0 {
			req.Header[textproto.CanonicalMIMEHeaderKey(name)] = append([]string(nil), vs...)
		}
	}

	sum := sha256.Sum256(body)
	creds := aws.Credentials{
		AccessKeyID:     id.AccessKeyID,
		SecretAccessKey: id.SecretAccessKey,
		SessionToken:    id.SessionToken,
	}
	err := v4.NewSigner().SignHTTP(r.Context(), creds, req, hex.EncodeToString(sum[:]), "sts", a.region, amzTime)
	if err != nil {
		return false
	}
	want, err := parseAuthorization(req.Header.Get("Authorization"))
	if err != nil {
		return false
	}
	sigOK := hmac.Equal([]byte(want.signature), []byte(a.signature))
	headersOK := want.signedHeadersRaw == a.signedHeadersRaw
	return sigOK && headersOK
}

// authorization is a parsed AWS4-HMAC-SHA256 Authorization header.
type authorization struct {
	accessKeyID, date, region, service, terminator string
	signedHeadersRaw                               string
	signedHeaders                                  []string
	signature                                      string
}

func (a authorization) signs(name string) bool {
	for _, h := range a.signedHeaders {
		if h == name {
			return true
		}
	}
	return false
}

// parseAuthorization parses
// "AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
// SignedHeaders=a;b;c, Signature=HEX". Its errors never quote the header.
func parseAuthorization(h string) (authorization, error) {
	var a authorization
	h = strings.TrimSpace(h)
	alg, rest, _ := strings.Cut(h, " ")
	if alg != signingAlgorithm {
		return a, errors.New("Unsupported AWS 'algorithm': only 'AWS4-HMAC-SHA256' is supported.")
	}
	var haveCred, haveSigned, haveSig bool
	for _, part := range strings.Split(rest, ",") {
		part = strings.TrimSpace(part)
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return a, errors.New("Authorization header components must be 'key=value' pairs separated by ','.")
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "Credential":
			if haveCred {
				return a, errors.New("Authorization header has a duplicate 'Credential' parameter.")
			}
			haveCred = true
			f := strings.Split(v, "/")
			if len(f) != 5 {
				return a, errors.New("Credential must have the form 'AccessKeyId/Date/Region/Service/aws4_request'.")
			}
			for _, x := range f {
				if x == "" {
					return a, errors.New("Credential must have the form 'AccessKeyId/Date/Region/Service/aws4_request'.")
				}
			}
			a.accessKeyID, a.date, a.region, a.service, a.terminator = f[0], f[1], f[2], f[3], f[4]
		case "SignedHeaders":
			if haveSigned {
				return a, errors.New("Authorization header has a duplicate 'SignedHeaders' parameter.")
			}
			haveSigned = true
			a.signedHeadersRaw = v
			seen := make(map[string]bool)
			for _, name := range strings.Split(v, ";") {
				if name == "" || seen[name] {
					return a, errors.New("SignedHeaders must be a ';'-separated list of distinct header names.")
				}
				seen[name] = true
				a.signedHeaders = append(a.signedHeaders, name)
			}
		case "Signature":
			if haveSig {
				return a, errors.New("Authorization header has a duplicate 'Signature' parameter.")
			}
			haveSig = true
			if v == "" {
				return a, errors.New("Authorization header requires a non-empty 'Signature' parameter.")
			}
			a.signature = v
		default:
			return a, errors.New("Authorization header has an unknown parameter.")
		}
	}
	switch {
	case !haveCred:
		return a, errors.New("Authorization header requires 'Credential' parameter.")
	case !haveSigned:
		return a, errors.New("Authorization header requires 'SignedHeaders' parameter.")
	case !haveSig:
		return a, errors.New("Authorization header requires 'Signature' parameter.")
	}
	return a, nil
}

// truncate bounds client-supplied text quoted in error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Response documents.

type callerIdentityResult struct {
	Arn     string `xml:"Arn" json:"Arn"`
	UserID  string `xml:"UserId" json:"UserId"`
	Account string `xml:"Account" json:"Account"`
}

type responseMetadata struct {
	RequestID string `xml:"RequestId" json:"RequestId"`
}

type callerIdentityResponse struct {
	XMLName  xml.Name               `xml:"GetCallerIdentityResponse"`
	Xmlns    string                 `xml:"xmlns,attr"`
	Results  []callerIdentityResult `xml:"GetCallerIdentityResult"`
	Metadata responseMetadata       `xml:"ResponseMetadata"`
}

func newResult(requestID string, ids ...Identity) callerIdentityResponse {
	resp := callerIdentityResponse{Xmlns: stsNamespace, Metadata: responseMetadata{RequestID: requestID}}
	for _, id := range ids {
		resp.Results = append(resp.Results, callerIdentityResult{Arn: id.ARN, UserID: id.UserID, Account: id.Account})
	}
	return resp
}

type errorDetail struct {
	Type    string `xml:"Type"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type errorResponse struct {
	XMLName   xml.Name    `xml:"ErrorResponse"`
	Xmlns     string      `xml:"xmlns,attr"`
	Error     errorDetail `xml:"Error"`
	RequestID string      `xml:"RequestId"`
}

func writeError(w http.ResponseWriter, e *apiError, requestID string) {
	writeXML(w, e.status, errorResponse{
		Xmlns:     stsNamespace,
		Error:     errorDetail{Type: e.typ, Code: e.code, Message: e.message},
		RequestID: requestID,
	})
}

func writeXML(w http.ResponseWriter, status int, v any) {
	b, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "stsserver: encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, id Identity, requestID string) {
	type result struct {
		Result   callerIdentityResult `json:"GetCallerIdentityResult"`
		Metadata responseMetadata     `json:"ResponseMetadata"`
	}
	doc := map[string]result{"GetCallerIdentityResponse": {
		Result:   callerIdentityResult{Arn: id.ARN, UserID: id.UserID, Account: id.Account},
		Metadata: responseMetadata{RequestID: requestID},
	}}
	b, err := json.Marshal(doc)
	if err != nil {
		http.Error(w, "stsserver: encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// Random values.

// newRequestID returns a random RFC 4122 version 4 UUID.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

const (
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	secretABC  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

// randomString returns n characters drawn uniformly from alphabet
// (at most 256 characters) using crypto/rand.
func randomString(alphabet string, n int) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, 2*n)
	for len(out) < n {
		_, _ = rand.Read(buf)
		for _, c := range buf {
			if int(c) >= limit {
				continue
			}
			out = append(out, alphabet[int(c)%len(alphabet)])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}

// NewIdentity makes a random identity for session of role in account:
// an ASIA… access key id (20 uppercase alphanumerics), a 40-character
// secret, a random session token, ARN
// arn:aws:sts::<account>:assumed-role/<role>/<session> and UserID
// "AROA<16 uppercase alphanumerics>:<session>".
func NewIdentity(account, role, session string) Identity {
	id := newCredentials()
	id.ARN = "arn:aws:sts::" + account + ":assumed-role/" + role + "/" + session
	id.Account = account
	id.UserID = "AROA" + randomString(upperAlnum, 16) + ":" + session
	return id
}
