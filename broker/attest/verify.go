package attest

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
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
	// HTTPClient sends requests to STS. Default: 2 s timeout, no redirects.
	// A client given here must not follow redirects either.
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
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Timeout:       DefaultSTSTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
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

var (
	nonceRE = regexp.MustCompile(`^[0-9a-f]{32}$`)
	// assumed-role ARN: arn:<partition>:sts::<account>:assumed-role/<role>/<session>
	assumedRoleRE = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):sts::(\d{12}):assumed-role/([\w+=,.@-]{1,64})/([\w+=,.@-]{2,64})$`)
	iamUserRE     = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):iam::(\d{12}):user/(?:[\x21-\x7e]*/)?([\w+=,.@-]{1,64})$`)
)

// checked is a proof that passed checks 1 to 6.
type checked struct {
	host    string
	header  http.Header
	amzDate time.Time
	nonce   string
}

// Verify runs every check of DESIGN §3 in order and returns the principal
// STS vouched for. Checks 1 to 8 make no outbound call.
func (v *Verifier) Verify(ctx context.Context, p *Proof) (*Principal, error) {
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
	// 8. single use: recorded until the proof could no longer pass check 7.
	fresh, err := v.cfg.Nonces.UseNonce(ctx, c.nonce, c.amzDate.Add(v.cfg.MaxAge+time.Second))
	if err != nil {
		return nil, &Error{Code: CodeInternal, Check: 8, Message: "nonce store unavailable", Err: err}
	}
	if !fresh {
		return nil, &Error{Code: CodeReplayedProof, Check: 8, Message: "proof was already used"}
	}
	// 9. ask STS
	res, err := v.callSTS(ctx, c, p.Body)
	if err != nil {
		return nil, err
	}
	// 10. the identity
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
		return nil, invalid(2, "url host %q is not an allowed STS host", truncate(u.Host, 80))
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
			return nil, invalid(4, "header %q is not allowed in a proof", truncate(name, 64))
		}
		if len(vals) != 1 || len(h[cn]) != 0 {
			return nil, invalid(4, "header %q must have exactly one value", cn)
		}
		if strings.ContainsAny(vals[0], "\r\n\x00") {
			return nil, invalid(4, "header %q has a control character", cn)
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

type callerIdentity struct {
	XMLName xml.Name `xml:"GetCallerIdentityResponse"`
	Results []struct {
		Arn     string `xml:"Arn"`
		UserID  string `xml:"UserId"`
		Account string `xml:"Account"`
	} `xml:"GetCallerIdentityResult"`
}

type stsError struct {
	Code string `xml:"Error>Code"`
}

// callSTS is check 9. The request goes to the configured endpoint, never to
// a host taken from the proof, and keeps the signed Host header.
func (v *Verifier) callSTS(ctx context.Context, c *checked, body []byte) (*callerIdentity, error) {
	endpoint := v.cfg.Endpoint
	if endpoint == "" {
		endpoint = "https://" + c.host // allowlisted, so configuration, not caller input
	}
	ctx, cancel := context.WithTimeout(ctx, DefaultSTSTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint+"/", bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Code: CodeInternal, Check: 9, Message: "building STS request", Err: err}
	}
	for k, vals := range c.header {
		if k == "Host" || k == "Content-Length" {
			continue
		}
		req.Header[k] = vals
	}
	req.Host = c.header.Get("Host")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, &Error{Code: CodeSTSUnavailable, Check: 9, Message: "STS did not answer", Err: redactURLError(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxSTSResponse+1))
	if err != nil {
		return nil, &Error{Code: CodeSTSUnavailable, Check: 9, Message: "reading STS answer", Err: err}
	}
	switch {
	case resp.StatusCode >= 500:
		return nil, &Error{Code: CodeSTSUnavailable, Check: 9, Message: fmt.Sprintf("STS answered %d", resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		var se stsError
		_ = xml.Unmarshal(data, &se)
		msg := fmt.Sprintf("STS answered %d", resp.StatusCode)
		if code := safeCode(se.Code); code != "" {
			msg += " " + code
		}
		return nil, &Error{Code: CodeIdentityRejected, Check: 9, Message: msg}
	}
	if len(data) > maxSTSResponse {
		return nil, &Error{Code: CodeIdentityRejected, Check: 9, Message: "STS answer is too large"}
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/xml" {
		return nil, &Error{Code: CodeIdentityRejected, Check: 9, Message: "STS answer is not text/xml"}
	}
	var ci callerIdentity
	if err := xml.Unmarshal(data, &ci); err != nil {
		return nil, &Error{Code: CodeIdentityRejected, Check: 9, Message: "STS answer does not parse", Err: err}
	}
	if len(ci.Results) != 1 {
		return nil, &Error{Code: CodeIdentityRejected, Check: 9, Message: "STS answer must hold exactly one GetCallerIdentityResult"}
	}
	return &ci, nil
}

// principal is check 10.
func (v *Verifier) principal(ci *callerIdentity) (*Principal, error) {
	r := ci.Results[0]
	arn, account, userID := strings.TrimSpace(r.Arn), strings.TrimSpace(r.Account), strings.TrimSpace(r.UserID)
	if m := assumedRoleRE.FindStringSubmatch(arn); m != nil {
		if m[2] != account {
			return nil, &Error{Code: CodeIdentityRejected, Check: 10, Message: "STS ARN account does not match its Account field"}
		}
		return &Principal{
			ARN: arn, Account: account, Role: m[3], Session: m[4], UserID: userID,
			RoleARN: "arn:" + m[1] + ":iam::" + account + ":role/" + m[3],
		}, nil
	}
	if m := iamUserRE.FindStringSubmatch(arn); m != nil && v.cfg.AllowIAMUsers {
		if m[2] != account {
			return nil, &Error{Code: CodeIdentityRejected, Check: 10, Message: "STS ARN account does not match its Account field"}
		}
		return &Principal{
			ARN: arn, Account: account, Role: m[3], Session: m[3], UserID: userID,
			RoleARN: "arn:" + m[1] + ":iam::" + account + ":user/" + m[3],
		}, nil
	}
	return nil, &Error{Code: CodeIdentityRejected, Check: 10, Message: fmt.Sprintf("identity %q is not an assumed role", truncate(arn, 200))}
}

// redactURLError drops the URL from a transport error: it names only our own
// endpoint, but keeping errors uniform keeps them free of caller input.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

// safeCode keeps an STS error code only if it looks like one.
func safeCode(s string) string {
	if len(s) == 0 || len(s) > 64 {
		return ""
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.') {
			return ""
		}
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
