// Package localserver is the extension's local API, through which function code in the
// same sandbox reads its credentials. Its wire contract (paths, headers, documents, error
// codes) is package localapi, which extension/client reads with.
//
// It listens on 127.0.0.1 only and refuses any request whose Host header is not
// 127.0.0.1:PORT or localhost:PORT (421), which defeats DNS-rebinding pages and
// misdirected proxies. Its routes:
//
//	GET /v1/credentials/{name}[?refresh=true]   header X-Ephemera-Token: $AWS_SESSION_TOKEN
//	    200 {"name","username","password","host","port","dbname","sslmode","dsn","lease_id","expires_at"}
//	    401 unauthorized (token missing or wrong; compared in constant time)
//	    404 not_found (no such credential)
//	    502 broker_refused (the broker refused; the message carries its code)
//	    503 not_ready / broker_unavailable (INIT failed or still running, broker unreachable)
//	GET /v1/aws/{name}[?refresh=true]           header Authorization: $AWS_SESSION_TOKEN
//	                                             (or X-Ephemera-Token: $AWS_SESSION_TOKEN)
//	    200 {"AccessKeyId","SecretAccessKey","Token","Expiration"}, Expiration in RFC 3339
//	    401, 404, 502, 503 as above
//	GET /v1/health                               {"ready": true|false}, no token, no secret
//
// Errors are {"error": {"code", "message"}}, except under /v1/aws/, where they are
// {"code", "message"} as the AWS SDKs expect; every answer has Cache-Control: no-store.
//
// # AWS credentials
//
// GET /v1/aws/{name} speaks the protocol of the AWS SDKs' container credentials provider,
// so that an unmodified SDK whose environment has
//
//	AWS_CONTAINER_CREDENTIALS_FULL_URI=http://127.0.0.1:7411/v1/aws/<name>
//	AWS_CONTAINER_AUTHORIZATION_TOKEN=<the sandbox's AWS_SESSION_TOKEN>
//
// (and no static AWS_ACCESS_KEY_ID, which the SDKs' default chains prefer) signs its
// requests with the extension's AWS session. The SDK sends the token verbatim in the
// Authorization header; the server accepts it there or in X-Ephemera-Token (every token
// header present must carry the token). A session served normally has at least 5 minutes
// left, as the SDKs ask again for container credentials 5 minutes before their
// Expiration; only while the broker is unreachable is a cached session served until its
// Expiration.
// A read during INIT waits (bounded) for the credential instead of failing. After a failed
// INIT, in lazy mode a read of a missing credential waits (at most 2 s) for a fetch it
// starts or joins before it answers 503; in fail mode reads are held, unanswered, until
// the extension has reported the failure and exits (see package agent). The "dsn" is
// a libpq keyword/value string with every value quoted; nothing else prints it.
package localserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/localapi"
)

// Source is what the server serves; *agent.Agent implements it.
type Source interface {
	Get(ctx context.Context, name string, refresh bool) (agent.Credential, error)
	Ready() bool
}

// AWSSource is what the server needs to serve GET /v1/aws/{name}; *agent.Agent
// implements it. A Source that does not implement it has no AWS sessions (404).
type AWSSource interface {
	GetAWS(ctx context.Context, name string, refresh bool) (agent.AWSCredential, error)
}

var (
	_ Source    = (*agent.Agent)(nil)
	_ AWSSource = (*agent.Agent)(nil)
)

// Config configures a Server. Source and Token are required.
type Config struct {
	// Port on 127.0.0.1 (EPHEMERA_PORT); 0 picks a free port (tests).
	Port int
	// Token callers must present in X-Ephemera-Token (AWS_SESSION_TOKEN); under /v1/aws/
	// also in Authorization.
	Token string
	// Source gives the credentials.
	Source Source
	// Logger receives one line per request (no secrets). Default: discard.
	Logger *slog.Logger
}

// Server is the local API.
type Server struct {
	cfg   Config
	token [32]byte
	ln    net.Listener
	srv   *http.Server
	port  int
	// hostIP and hostName are the Host headers accepted (127.0.0.1:PORT,
	// localhost:PORT, the latter in any case), computed once.
	hostIP, hostName string
	// answers caches each credential's encoded 200 answer (name →
	// *answer): a read of an unchanged credential writes stored bytes.
	answers sync.Map
}

// answer is the encoded answer to a read of credential c.
type answer struct {
	c    agent.Credential
	body []byte
}

// Listen binds 127.0.0.1:Port and returns a server that is not serving yet; call Serve.
func Listen(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("localserver: source is nil")
	}
	if cfg.Token == "" {
		return nil, errors.New("localserver: token is empty")
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("localserver: port %d is out of range", cfg.Port)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("localserver: %w", err)
	}
	s := &Server{cfg: cfg, token: sha256.Sum256([]byte(cfg.Token)), ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
	s.hostIP, s.hostName = "127.0.0.1:"+strconv.Itoa(s.port), "localhost:"+strconv.Itoa(s.port)
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Start is Listen followed by Serve in the background (a failure of Serve is logged).
func Start(cfg Config) (*Server, error) {
	s, err := Listen(cfg)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := s.Serve(); err != nil {
			s.cfg.Logger.Error("local server stopped", "error", err.Error())
		}
	}()
	return s, nil
}

// Serve serves until Shutdown; it then returns nil.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("localserver: %w", err)
	}
	return nil
}

// Addr is the listening address, 127.0.0.1:PORT.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is http://127.0.0.1:PORT.
func (s *Server) URL() string { return "http://" + s.Addr() }

// Shutdown stops accepting requests and waits for those in progress while ctx lasts.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
		return fmt.Errorf("localserver: shutdown: %w", err)
	}
	return nil
}

// Handler is the API's handler (it checks Host against the server's port).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(localapi.PathCredentials+"{name}", s.handleCredential)
	mux.HandleFunc(localapi.PathAWS+"{name}", s.handleAWS)
	mux.HandleFunc(localapi.PathHealth, s.handleHealth)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, localapi.CodeNotFound, "no such endpoint")
	})
	return s.guard(mux)
}

// guard sets common headers, refuses foreign Host headers and non-GET
// methods, and logs each request at debug level: a function that reads its
// credential on every invocation would otherwise write a line to CloudWatch
// Logs per invocation (make bench measures no latency difference: the cost
// is the log volume). Failures are logged at warn where they happen.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rw.Header().Set("Cache-Control", "no-store")
		rw.Header().Set("X-Content-Type-Options", "nosniff")
		writeError := writeError
		if strings.HasPrefix(r.URL.Path, localapi.PathAWS) {
			writeError = writeAWSError
		}
		switch {
		case !s.hostAllowed(r.Host):
			writeError(rw, http.StatusMisdirectedRequest, localapi.CodeMisdirected,
				fmt.Sprintf("this API answers only to 127.0.0.1:%d or localhost:%d", s.port, s.port))
		case r.Method != http.MethodGet && r.Method != http.MethodHead:
			rw.Header().Set("Allow", "GET")
			writeError(rw, http.StatusMethodNotAllowed, localapi.CodeMethodNotAllowed, "use GET")
		default:
			next.ServeHTTP(rw, r)
		}
		if s.cfg.Logger.Enabled(r.Context(), slog.LevelDebug) {
			s.cfg.Logger.LogAttrs(r.Context(), slog.LevelDebug, "local request", slog.String("method", r.Method),
				slog.String("path", r.URL.Path), slog.Int("status", rw.status),
				slog.Float64("latency_ms", float64(time.Since(start).Microseconds())/1000))
		}
	})
}

func (s *Server) hostAllowed(host string) bool {
	return host == s.hostIP || strings.EqualFold(host, s.hostName)
}

func (s *Server) tokenOK(r *http.Request) bool {
	return s.tokenIn(r.Header, localapi.HeaderToken) == 1
}

// awsTokenOK accepts the token in Authorization (as the AWS SDKs send it) or in
// X-Ephemera-Token: at least one of them present, and every one present right.
func (s *Server) awsTokenOK(r *http.Request) bool {
	auth, tok := s.tokenIn(r.Header, localapi.HeaderAuthorization), s.tokenIn(r.Header, localapi.HeaderToken)
	return auth >= 0 && tok >= 0 && (auth == 1 || tok == 1)
}

// tokenIn checks the header name of h: 0 when absent, 1 when it holds exactly the token,
// -1 otherwise (empty, repeated or wrong).
func (s *Server) tokenIn(h http.Header, name string) int {
	vals := h.Values(name)
	switch {
	case len(vals) == 0:
		return 0
	case len(vals) != 1 || vals[0] == "":
		return -1
	}
	got := sha256.Sum256([]byte(vals[0])) // equal lengths: the compare time reveals nothing
	if subtle.ConstantTimeCompare(got[:], s.token[:]) == 1 {
		return 1
	}
	return -1
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, localapi.Health{Ready: s.cfg.Source.Ready()})
}

// refreshParam parses ?refresh=.
func refreshParam(r *http.Request) (bool, error) {
	if r.URL.RawQuery == "" {
		return false, nil // the common read: no query to parse
	}
	v := r.URL.Query().Get("refresh")
	if v == "" {
		return false, nil
	}
	return strconv.ParseBool(v)
}

func (s *Server) handleCredential(w http.ResponseWriter, r *http.Request) {
	if !s.tokenOK(r) {
		writeError(w, http.StatusUnauthorized, localapi.CodeUnauthorized, "the "+localapi.HeaderToken+" header is missing or wrong")
		return
	}
	name := r.PathValue("name")
	refresh, err := refreshParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, localapi.CodeInvalidRequest, "refresh must be true or false")
		return
	}
	c, err := s.cfg.Source.Get(r.Context(), name, refresh)
	if err != nil {
		status, code := classify(err)
		s.cfg.Logger.Warn("credential read failed", "name", name, "status", status, "error", err.Error())
		writeError(w, status, code, err.Error())
		return
	}
	if a, ok := s.answers.Load(name); ok && a.(*answer).c == c {
		writeBody(w, http.StatusOK, a.(*answer).body)
		return
	}
	data, err := json.Marshal(localapi.Credential{
		Name: c.Name, Username: c.Username, Password: c.Password, Host: c.Host, Port: c.Port,
		DBName: c.DBName, SSLMode: c.SSLMode, DSN: DSN(c.Credential), LeaseID: c.LeaseID, ExpiresAt: c.ExpiresAt.UTC(),
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, localapi.CodeInternal, "encoding the answer failed")
		return
	}
	body := append(data, '\n')
	s.answers.Store(name, &answer{c: c, body: body})
	writeBody(w, http.StatusOK, body)
}

// writeBody writes an encoded JSON answer.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

var jsonContentType = []string{"application/json"}

func (s *Server) handleAWS(w http.ResponseWriter, r *http.Request) {
	if !s.awsTokenOK(r) {
		writeAWSError(w, http.StatusUnauthorized, localapi.CodeUnauthorized,
			"the "+localapi.HeaderAuthorization+" (or "+localapi.HeaderToken+") header is missing or wrong")
		return
	}
	name := r.PathValue("name")
	refresh, err := refreshParam(r)
	if err != nil {
		writeAWSError(w, http.StatusBadRequest, localapi.CodeInvalidRequest, "refresh must be true or false")
		return
	}
	src, ok := s.cfg.Source.(AWSSource)
	if !ok {
		writeAWSError(w, http.StatusNotFound, localapi.CodeNotFound, fmt.Sprintf("no AWS profile %q", name))
		return
	}
	c, err := src.GetAWS(r.Context(), name, refresh)
	if err != nil {
		status, code := classify(err)
		s.cfg.Logger.Warn("AWS session read failed", "name", name, "status", status, "error", err.Error())
		writeAWSError(w, status, code, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, localapi.AWSCredentials{
		AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, Token: c.SessionToken,
		Expiration: c.Expiration.UTC().Format(time.RFC3339),
	})
}

// classify maps an agent error to an HTTP status and error code.
func classify(err error) (int, string) {
	switch {
	case errors.Is(err, agent.ErrUnknown):
		return http.StatusNotFound, localapi.CodeNotFound
	case errors.Is(err, agent.ErrNotReady), errors.Is(err, agent.ErrClosed):
		return http.StatusServiceUnavailable, localapi.CodeNotReady
	case errors.Is(err, agent.ErrUnavailable):
		return http.StatusServiceUnavailable, localapi.CodeBrokerUnavailable
	case brokerclient.StatusOf(err) != 0:
		return http.StatusBadGateway, localapi.CodeBrokerRefused
	}
	return http.StatusServiceUnavailable, localapi.CodeBrokerUnavailable
}

var dsnEscaper = strings.NewReplacer(`\`, `\\`, `'`, `\'`)

// DSN renders c as a libpq keyword/value connection string, every value single-quoted
// with backslashes and quotes escaped.
func DSN(c api.Credential) string {
	var b strings.Builder
	kv := func(k, v string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteString("='")
		b.WriteString(dsnEscaper.Replace(v))
		b.WriteByte('\'')
	}
	kv("host", c.Host)
	kv("port", strconv.Itoa(c.Port))
	kv("dbname", c.DBName)
	kv("user", c.Username)
	kv("password", c.Password)
	if c.SSLMode != "" {
		kv("sslmode", c.SSLMode)
	}
	return b.String()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":{"code":"`+localapi.CodeInternal+`","message":"encoding the answer failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, localapi.ErrorDocument{Error: localapi.ErrorBody{Code: code, Message: msg}})
}

// writeAWSError writes an error in the shape the AWS SDKs' container credentials provider
// decodes: {"code", "message"}.
func writeAWSError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, localapi.AWSError{Code: code, Message: msg})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}
