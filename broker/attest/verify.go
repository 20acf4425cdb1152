package attest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// NonceStore records used nonces so that a proof is accepted at most once.
type NonceStore interface {
	// UseNonce records nonce until expires. It reports false when the nonce was
	// already recorded (a replay).
	UseNonce(ctx context.Context, nonce string, expires time.Time) (fresh bool, err error)
}

// Config configures a Verifier. Zero values take the documented defaults.
type Config struct {
	// Audience proofs must carry in X-Ephemera-Audience. Required.
	Audience string
	// Region of the broker; it names the default STS hosts. Required unless
	// AllowedHosts is set.
	Region string
	// AllowedHosts are the STS hosts a proof's URL may name. Default:
	// sts.amazonaws.com and sts.<Region>.amazonaws.com.
	AllowedHosts []string
	// Endpoint is where verified proofs are sent (EPHEMERA_STS_ENDPOINT),
	// keeping the signed Host header. Default: https://<host>/ for the
	// proof's (allowlisted) host.
	Endpoint string
	// MaxAge is how old X-Amz-Date may be. Default 5 minutes.
	MaxAge time.Duration
	// MaxAhead is how far X-Amz-Date may be in the future. Default 1 minute.
	MaxAhead time.Duration
	// AllowIAMUsers accepts arn:<p>:iam::<acct>:user/<name> identities.
	// Default false: only assumed roles (Lambda execution roles).
	AllowIAMUsers bool
	// Nonces records used nonces. Required.
	Nonces NonceStore
	// HTTPClient sends requests to STS. Default: a client with a 2 s
	// timeout. Whatever the client, redirects are not followed (the
	// verifier uses a copy whose CheckRedirect refuses them), and each call
	// is cut off after DefaultSTSTimeout.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Defaults of Config.
const (
	DefaultMaxAge     = 5 * time.Minute
	DefaultMaxAhead   = time.Minute
	DefaultSTSTimeout = 2 * time.Second
	maxSTSResponse    = 64 << 10
)

// Verifier checks proofs. It is safe for concurrent use.
type Verifier struct {
	cfg   Config
	hosts map[string]bool
}

// NewVerifier validates cfg and returns a Verifier.
func NewVerifier(cfg Config) (*Verifier, error) {
	if cfg.Audience == "" {
		return nil, errors.New("attest: config: Audience is required")
	}
	if cfg.Region == "" && len(cfg.AllowedHosts) == 0 {
		return nil, errors.New("attest: config: Region is required")
	}
	if cfg.Nonces == nil {
		return nil, errors.New("attest: config: Nonces is required")
	}
	if len(cfg.AllowedHosts) == 0 {
		cfg.AllowedHosts = []string{"sts.amazonaws.com", STSHost(cfg.Region)}
	}
	hosts := make(map[string]bool, len(cfg.AllowedHosts))
	for _, h := range cfg.AllowedHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" || strings.ContainsAny(h, "/:@?# ") {
			return nil, fmt.Errorf("attest: config: STS host %q is not a bare host name", h)
		}
		hosts[h] = true
	}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" ||
			u.ForceQuery || u.Fragment != "" || u.User != nil || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("attest: config: STS endpoint %q is not an http(s) base URL", cfg.Endpoint)
		}
		cfg.Endpoint = strings.TrimRight(cfg.Endpoint, "/")
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.MaxAhead <= 0 {
		cfg.MaxAhead = DefaultMaxAhead
	}
	// A copy of the caller's client, so that no client can follow a
	// redirect: STS's answer is the first answer, or none.
	client := http.Client{Timeout: DefaultSTSTimeout}
	if cfg.HTTPClient != nil {
		client = *cfg.HTTPClient
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.HTTPClient = &client
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Verifier{cfg: cfg, hosts: hosts}, nil
}

// MaxAge is the freshness window in force.
func (v *Verifier) MaxAge() time.Duration { return v.cfg.MaxAge }

// allowedHeaders are the only header names a proof may carry (canonical form).
var allowedHeaders = map[string]bool{
	"Authorization":        true,
	"Content-Type":         true,
	"Host":                 true,
	"X-Amz-Date":           true,
	"X-Amz-Security-Token": true,
	HeaderAudience:         true,
	HeaderNonce:            true,
	"Content-Length":       true,
}

var nonceRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// checked is a proof that passed checks 1 to 6.
type checked struct {
	host    string
	header  http.Header
	amzDate time.Time
	nonce   string
}

// Verify runs every check of the package documentation in order and
// returns the principal STS vouched for. Checks 1 to 8 make no outbound
// call; the first failure ends verification with an *Error. The nonce is
// recorded at check 8, before STS is asked.
func (v *Verifier) Verify(ctx context.Context, p *Proof) (*Principal, error) {
	c, err := v.checkFresh(p)
	if err != nil {
		return nil, err
	}
	// 8. single use: recorded until the proof could no longer pass check 7.
	if err := v.spend(ctx, c.nonce, v.nonceExpiry(c)); err != nil {
		return nil, err
	}
	return v.askSTS(ctx, c, p)
}

// VerifyDeferred is Verify that leaves the nonce to the caller: check 8
// only reads the nonce store (a nonce already recorded is a replay, refused
// before STS is asked), and the returned PendingNonce must then be recorded
// exactly once — inside the caller's own transaction, so that the
// credential and the spent nonce commit together, or with Spend on every
// path that ends without that transaction. Until it is recorded, the proof
// may be presented again; whichever presentation records it first wins, and
// the others fail with replayed_proof. Config.Nonces must implement
// NonceReader.
func (v *Verifier) VerifyDeferred(ctx context.Context, p *Proof) (*Principal, *PendingNonce, error) {
	reader, ok := v.cfg.Nonces.(NonceReader)
	if !ok {
		return nil, nil, &Error{Code: CodeInternal, Check: 8, Message: "the nonce store cannot be read without recording"}
	}
	c, err := v.checkFresh(p)
	if err != nil {
		return nil, nil, err
	}
	// 8. single use, read only.
	seen, err := reader.NonceSeen(ctx, c.nonce)
	if err != nil {
		return nil, nil, &Error{Code: CodeInternal, Check: 8, Message: "nonce store unavailable", Err: err}
	}
	if seen {
		return nil, nil, errReplayed()
	}
	pr, err := v.askSTS(ctx, c, p)
	if err != nil {
		return nil, nil, err
	}
	return pr, &PendingNonce{nonce: c.nonce, expires: v.nonceExpiry(c)}, nil
}

// Spend records a pending nonce with Config.Nonces. It fails with
// replayed_proof when the nonce was recorded already (another presentation
// of the same proof won), and does nothing for a nonce already spent
// through this PendingNonce.
func (v *Verifier) Spend(ctx context.Context, pn *PendingNonce) error {
	if pn == nil || pn.spent {
		return nil
	}
	if err := v.spend(ctx, pn.nonce, pn.expires); err != nil {
		return err
	}
	pn.spent = true
	return nil
}

// NonceReader is a NonceStore that can also tell whether a nonce was
// recorded, without recording it (VerifyDeferred).
type NonceReader interface {
	NonceStore
	NonceSeen(ctx context.Context, nonce string) (bool, error)
}

// PendingNonce is the nonce of a proof that VerifyDeferred accepted and
// nobody has recorded yet. Its fields are unexported and it formats as
// "[nonce]": a nonce in a log line would tell a reader which proof to
// replay if it were ever left unrecorded.
type PendingNonce struct {
	nonce   string
	expires time.Time
	spent   bool
}

// Value is what the caller records in its own transaction: the nonce and
// how long it must be kept. The caller then calls MarkSpent once that
// transaction has committed.
func (pn *PendingNonce) Value() (nonce string, expires time.Time) { return pn.nonce, pn.expires }

// MarkSpent notes that the caller's transaction recorded the nonce, so
// that a later Spend does nothing.
func (pn *PendingNonce) MarkSpent() { pn.spent = true }

// Spent reports whether the nonce was recorded through this PendingNonce.
func (pn *PendingNonce) Spent() bool { return pn.spent }

// Format hides the nonce from every fmt verb, for a PendingNonce and a
// pointer to one alike.
func (pn PendingNonce) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, "[nonce]") }

// LogValue hides the nonce from log/slog.
func (pn PendingNonce) LogValue() slog.Value { return slog.StringValue("[nonce]") }

func errReplayed() error {
	return &Error{Code: CodeReplayedProof, Check: 8, Message: "proof was already used"}
}

// checkFresh runs checks 1 to 7.
func (v *Verifier) checkFresh(p *Proof) (*checked, error) {
	c, err := v.checkShape(p)
	if err != nil {
		return nil, err
	}
	now := v.cfg.Now()
	// 7. freshness
	if age := now.Sub(c.amzDate); age > v.cfg.MaxAge {
		return nil, &Error{Code: CodeStaleProof, Check: 7, Message: fmt.Sprintf("proof is %s old; the limit is %s", age.Round(time.Second), v.cfg.MaxAge)}
	} else if -age > v.cfg.MaxAhead {
		return nil, &Error{Code: CodeStaleProof, Check: 7, Message: fmt.Sprintf("proof is dated %s in the future; the limit is %s", (-age).Round(time.Second), v.cfg.MaxAhead)}
	}
	return c, nil
}

// nonceExpiry is how long a nonce is kept: until its proof could no longer
// pass check 7.
func (v *Verifier) nonceExpiry(c *checked) time.Time {
	return c.amzDate.Add(v.cfg.MaxAge + time.Second)
}

// spend records nonce (check 8).
func (v *Verifier) spend(ctx context.Context, nonce string, expires time.Time) error {
	fresh, err := v.cfg.Nonces.UseNonce(ctx, nonce, expires)
	if err != nil {
		return &Error{Code: CodeInternal, Check: 8, Message: "nonce store unavailable", Err: err}
	}
	if !fresh {
		return errReplayed()
	}
	return nil
}

// askSTS runs checks 9 (ask STS) and 10 (the identity).
func (v *Verifier) askSTS(ctx context.Context, c *checked, p *Proof) (*Principal, error) {
	res, err := v.callSTS(ctx, c, p.Body)
	if err != nil {
		return nil, err
	}
	return v.principal(res)
}

func (v *Verifier) checkShape(p *Proof) (*checked, error) {
	if p == nil {
		return nil, invalid(1, "identity proof is missing")
	}
	// 1. method and URL
	if p.Method != http.MethodPost {
		return nil, invalid(1, "method must be POST")
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		return nil, invalid(1, "url does not parse")
	}
	if u.Scheme != "https" || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery ||
		u.Fragment != "" || u.RawFragment != "" || u.Path != "/" || u.RawPath != "" {
		return nil, invalid(1, "url must be https://<sts host>/ with no query, fragment or user info")
	}
	// 2. host allowlist
	host := strings.ToLower(u.Host)
	if !v.hosts[host] {
		return nil, invalid(2, "url host %q is not an allowed STS host", clip(u.Host))
	}
	// 3. body
	if string(p.Body) != RequestBody {
		return nil, invalid(3, "body must be exactly %q", RequestBody)
	}
	// 4. headers: allowlisted names, one value each
	h := make(http.Header, len(p.Headers))
	for name, vals := range p.Headers {
		cn := http.CanonicalHeaderKey(name)
		if !allowedHeaders[cn] {
			return nil, invalid(4, "header %q is not allowed in a proof", clip(name))
		}
		if len(vals) != 1 || len(h[cn]) != 0 {
			return nil, invalid(4, "header %q must have exactly one value", clip(cn))
		}
		if strings.ContainsAny(vals[0], "\r\n\x00") {
			return nil, invalid(4, "header %q has a control character", clip(cn))
		}
		h[cn] = []string{vals[0]}
	}
	if cl := h.Get("Content-Length"); cl != "" || len(h["Content-Length"]) > 0 {
		if n, err := strconv.Atoi(cl); err != nil || n != len(p.Body) {
			return nil, invalid(4, "Content-Length does not match the body")
		}
	}
	for _, req := range []string{"Authorization", "Host", "X-Amz-Date", "Content-Type", HeaderAudience, HeaderNonce} {
		if len(h[req]) == 0 {
			return nil, invalid(4, "header %q is required", req)
		}
	}
	if !strings.EqualFold(h.Get("Host"), host) {
		return nil, invalid(4, "Host header does not match the url host")
	}
	if mt, _, err := mime.ParseMediaType(h.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, invalid(4, "Content-Type must be application/x-www-form-urlencoded")
	}
	// 5. audience and nonce
	if h.Get(HeaderAudience) != v.cfg.Audience {
		return nil, invalid(5, "audience does not match this broker")
	}
	nonce := h.Get(HeaderNonce)
	if !nonceRE.MatchString(nonce) {
		return nil, invalid(5, "nonce must be 32 lowercase hex characters")
	}
	// 6. Authorization
	if err := checkAuthorization(h.Get("Authorization"), len(h["X-Amz-Security-Token"]) > 0); err != nil {
		return nil, err
	}
	amzDate, err := time.Parse(AmzDateFormat, h.Get("X-Amz-Date"))
	if err != nil {
		return nil, invalid(6, "X-Amz-Date must have the form %s", AmzDateFormat)
	}
	return &checked{host: host, header: h, amzDate: amzDate, nonce: nonce}, nil
}

// checkAuthorization is check 6: one AWS4-HMAC-SHA256 value whose
// SignedHeaders cover what the broker relies on and whose scope names sts.
func checkAuthorization(auth string, hasToken bool) error {
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return invalid(6, "Authorization must use AWS4-HMAC-SHA256")
	}
	var credential, signedHeaders, signature string
	for _, part := range strings.Split(auth[len(algo):], ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return invalid(6, "Authorization is malformed")
		}
		var dst *string
		switch k {
		case "Credential":
			dst = &credential
		case "SignedHeaders":
			dst = &signedHeaders
		case "Signature":
			dst = &signature
		default:
			return invalid(6, "Authorization has an unexpected component")
		}
		if *dst != "" {
			return invalid(6, "Authorization repeats a component")
		}
		*dst = val
	}
	if credential == "" || signedHeaders == "" || signature == "" {
		return invalid(6, "Authorization lacks Credential, SignedHeaders or Signature")
	}
	if len(signature) != 64 || strings.Trim(signature, "0123456789abcdef") != "" {
		return invalid(6, "Authorization signature is malformed")
	}
	scope := strings.Split(credential, "/")
	if len(scope) != 5 || scope[0] == "" || scope[2] == "" || scope[4] != "aws4_request" {
		return invalid(6, "Authorization credential scope is malformed")
	}
	if scope[3] != "sts" {
		return invalid(6, "Authorization scope must name service sts")
	}
	signed := map[string]bool{}
	for _, s := range strings.Split(signedHeaders, ";") {
		signed[s] = true
	}
	need := []string{"host", "x-amz-date", "x-ephemera-audience", "x-ephemera-nonce"}
	if hasToken {
		need = append(need, "x-amz-security-token")
	}
	for _, n := range need {
		if !signed[n] {
			return invalid(6, "Authorization SignedHeaders must include %s", n)
		}
	}
	return nil
}

// principal is check 10: the ARN must be a role session
// (arn:<p>:sts::<acct>:assumed-role/<role>/<session>) or, only with
// AllowIAMUsers, an IAM user, and its account must equal the Account field.
func (v *Verifier) principal(id *identity) (*Principal, error) {
	a, err := ParsePrincipalARN(id.arn)
	switch {
	case err != nil, a.Kind == KindRole && a.Session == "":
		return nil, &Error{Code: CodeIdentityRejected, Check: 10, Message: fmt.Sprintf("identity %q is not an assumed role", clip(id.arn))}
	case a.Kind == KindUser && !v.cfg.AllowIAMUsers:
		return nil, &Error{Code: CodeIdentityRejected, Check: 10, Message: fmt.Sprintf("identity %q is an IAM user; only assumed roles are accepted", clip(id.arn))}
	case a.Account != id.account:
		return nil, &Error{Code: CodeIdentityRejected, Check: 10, Message: "STS ARN account does not match its Account field"}
	}
	p := &Principal{ARN: id.arn, Account: a.Account, Kind: a.Kind, RoleARN: a.Canonical(), UserID: id.userID}
	if a.Kind == KindUser {
		// Role and Session keep the user name for callers that predate
		// Kind; policies see a user only as Ephemera::User.
		p.User, p.Role, p.Session = a.Name, a.Name, a.Name
	} else {
		p.Role, p.Session = a.Name, a.Session
	}
	return p, nil
}
