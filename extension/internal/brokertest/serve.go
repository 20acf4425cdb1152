package brokertest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/broker/attest"
)

func (b *Broker) serve(w http.ResponseWriter, r *http.Request) {
	call := Call{Op: r.URL.Path, Authorization: r.Header.Get("Authorization"), Arrived: time.Now()}
	body, _ := io.ReadAll(io.LimitReader(r.Body, api.MaxBodyBytes+1))
	call.SigV4Err = b.verifySigV4(r, body, "execute-api")
	w.Header().Set("X-Request-Id", RequestID)

	b.mu.Lock()
	b.inflight++
	hang, hold, gateway := b.hang, b.hold, b.gatewayAuth
	drop := b.drops > 0
	if drop {
		b.drops--
	}
	var fail *failure
	if b.down {
		fail = &failure{http.StatusServiceUnavailable, string(api.CodeDatabaseUnavailable)}
	} else if !drop && len(b.failures) > 0 {
		fail = &b.failures[0]
		b.failures = b.failures[1:]
	}
	b.mu.Unlock()
	defer func() { b.mu.Lock(); b.inflight--; b.mu.Unlock() }()

	status, answer, aerr := 0, any(nil), (*api.Error)(nil)
	defer func() {
		b.mu.Lock()
		call.Status = status
		if aerr != nil {
			call.Code = string(aerr.Code)
		}
		b.calls = append(b.calls, call)
		b.mu.Unlock()
	}()
	record(&call, r.URL.Path, body)

	if drop {
		status = -1
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
			}
		}
		return
	}
	if hang != nil {
		select {
		case <-hang:
		case <-b.done:
		case <-r.Context().Done():
			status = -1
			return
		}
		aerr = api.Errorf(api.CodeSTSUnavailable, "the broker hung")
	}
	if hold != nil {
		select {
		case <-hold:
		case <-b.done:
		case <-r.Context().Done():
			status = -1
			return
		}
	}
	switch {
	case aerr != nil:
	case fail != nil:
		aerr = api.Errorf(api.Code(fail.code), "scripted failure")
		status = fail.status
	case gateway && call.SigV4Err != nil:
		// API Gateway's own refusal: not a broker error document.
		status = http.StatusForbidden
		writeJSON(w, status, map[string]string{"message": "Forbidden"})
		return
	default:
		status, answer, aerr = b.handle(w, r, &call, body)
	}
	if aerr != nil {
		if status == 0 {
			status = aerr.Status()
		}
		writeError(w, status, aerr)
		return
	}
	writeJSON(w, status, answer)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError writes e's document with status (e's own, unless a scripted failure chose
// another), and Retry-After on a 503 or 429.
func writeError(w http.ResponseWriter, status int, e *api.Error) {
	e.RequestID = RequestID
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		ra := e.RetryAfterHeader()
		if ra == "" {
			ra = "1"
		}
		w.Header().Set("Retry-After", ra)
	}
	writeJSON(w, status, e.Document())
}

// op names the operation of path and the lease id it names, if any.
func op(path string) (name, leaseID string) {
	switch path {
	case api.PathCredentials:
		return "issue", ""
	case api.PathAWSCredentials:
		return "assume", ""
	}
	if rest, ok := strings.CutPrefix(path, "/v1/leases/"); ok {
		if id, action, ok := strings.Cut(rest, "/"); ok && (action == "renew" || action == "revoke") && id != "" {
			return action, id
		}
	}
	return "", ""
}

// record fills the call's fields from the path and (leniently) the body, for tests to
// inspect; the handler decodes the body strictly.
func record(c *Call, path string, body []byte) {
	if name, id := op(path); name != "" {
		c.Op, c.LeaseID = name, id
	}
	var proof *api.Proof
	var ttl *int64
	switch c.Op {
	case "issue":
		var q api.IssueRequest
		if api.UnmarshalAnswer(body, &q) != nil {
			return
		}
		proof, ttl, c.Database, c.Role = q.Identity, q.TTLSeconds, q.Database, q.Role
	case "renew":
		var q api.RenewRequest
		if api.UnmarshalAnswer(body, &q) != nil {
			return
		}
		proof, ttl = q.Identity, q.TTLSeconds
	case "revoke":
		var q api.RevokeRequest
		if api.UnmarshalAnswer(body, &q) != nil {
			return
		}
		proof = q.Identity
	case "assume":
		var q api.AWSCredentialsRequest
		if api.UnmarshalAnswer(body, &q) != nil {
			return
		}
		proof, ttl, c.Profile = q.Identity, q.TTLSeconds, q.Profile
	}
	if ttl != nil {
		c.TTLSeconds = *ttl
	}
	if proof != nil {
		for k, v := range proof.Headers {
			if strings.EqualFold(k, attest.HeaderNonce) && len(v) == 1 {
				c.Nonce = v[0]
			}
			if strings.EqualFold(k, "X-Amz-Date") && len(v) == 1 {
				c.ProofDate, _ = time.Parse(attest.AmzDateFormat, v[0])
			}
		}
	}
}

// handle serves one request in the broker's order: method, content type, strict body,
// identity proof, then what it names, then the policy.
func (b *Broker) handle(w http.ResponseWriter, r *http.Request, c *Call, body []byte) (int, any, *api.Error) {
	name, _ := op(r.URL.Path)
	if name == "" {
		return 0, nil, api.Errorf(api.CodeNotFound, "no such endpoint")
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return 0, nil, api.Errorf(api.CodeInvalidRequest, "method %s not allowed; use POST", r.Method)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return 0, nil, api.Errorf(api.CodeInvalidRequest, "Content-Type must be application/json")
	}
	if len(body) > api.MaxBodyBytes {
		return 0, nil, api.Errorf(api.CodePayloadTooLarge, "the body exceeds %d bytes", api.MaxBodyBytes)
	}
	var (
		proof *api.Proof
		req   any
		ttl   *int64
	)
	switch name {
	case "issue":
		var q api.IssueRequest
		if err := api.Unmarshal(body, &q); err != nil {
			return 0, nil, api.Wrap(api.CodeInvalidRequest, err, "the body is not a valid request: "+err.Error())
		}
		proof, ttl, req = q.Identity, q.TTLSeconds, q
	case "renew":
		var q api.RenewRequest
		if err := api.Unmarshal(body, &q); err != nil {
			return 0, nil, api.Wrap(api.CodeInvalidRequest, err, "the body is not a valid request: "+err.Error())
		}
		proof, ttl, req = q.Identity, q.TTLSeconds, q
	case "revoke":
		var q api.RevokeRequest
		if err := api.Unmarshal(body, &q); err != nil {
			return 0, nil, api.Wrap(api.CodeInvalidRequest, err, "the body is not a valid request: "+err.Error())
		}
		proof, req = q.Identity, q
	case "assume":
		var q api.AWSCredentialsRequest
		if err := api.Unmarshal(body, &q); err != nil {
			return 0, nil, api.Wrap(api.CodeInvalidRequest, err, "the body is not a valid request: "+err.Error())
		}
		proof, ttl, req = q.Identity, q.TTLSeconds, q
	}
	if ttl != nil && *ttl < 1 {
		return 0, nil, api.Errorf(api.CodeInvalidRequest, "ttl_seconds must be at least 1")
	}
	if proof == nil {
		return 0, nil, api.Errorf(api.CodeInvalidProof, "identity is missing")
	}
	p, err := b.verifier.Verify(r.Context(), proof)
	if err != nil {
		var ae *attest.Error
		if !errors.As(err, &ae) {
			return 0, nil, api.Wrap(api.CodeInternal, err, "verifying the proof failed")
		}
		return 0, nil, api.Wrap(api.Code(ae.Code), err, ae.Message) // the message holds no secret; the cause is not sent
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	switch q := req.(type) {
	case api.IssueRequest:
		return b.issue(now, c, p, q)
	case api.RenewRequest:
		return b.renew(now, c, p, q)
	case api.RevokeRequest:
		return b.revoke(now, c, p)
	case api.AWSCredentialsRequest:
		return b.assume(now, c, p, q)
	}
	return 0, nil, api.Errorf(api.CodeInternal, "unhandled request")
}

// permit is the double's policy: every role but the denied ones. b.mu is held.
func (b *Broker) permit(p *attest.Principal, action string) *api.Error {
	if b.denied[p.Role] {
		return api.Errorf(api.CodeAccessDenied, "no policy permits %s for %s", action, p.RoleARN)
	}
	return nil
}

// leaseTTL is the TTL asked for, or the default; above max_ttl is an error. b.mu is held.
func (b *Broker) leaseTTL(ttl *int64) (time.Duration, *api.Error) {
	if ttl == nil {
		return b.defaultTTL, nil
	}
	d := time.Duration(*ttl) * time.Second
	if d > b.maxTTL {
		return 0, api.Errorf(api.CodeTTLExceedsMax, "ttl_seconds exceeds the role's max_ttl")
	}
	return d, nil
}

func (b *Broker) issue(now time.Time, c *Call, p *attest.Principal, q api.IssueRequest) (int, any, *api.Error) {
	if !b.databases[q.Database] || q.Role == "" {
		return 0, nil, api.Errorf(api.CodeNotFound, "database or role is not configured")
	}
	if e := b.permit(p, "issue"); e != nil {
		return 0, nil, e
	}
	ttl, e := b.leaseTTL(q.TTLSeconds)
	if e != nil {
		return 0, nil, e
	}
	b.seq++
	l := &Lease{
		ID: newUUID(), Database: q.Database, Role: q.Role,
		Username: fmt.Sprintf("%s%s_%04d", rolePrefx, q.Role, b.seq), Password: "pw-" + newUUID(),
		IssuedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC(), MaxExpiresAt: now.Add(b.maxTTL).UTC(),
	}
	b.leases[l.ID] = l
	c.LeaseID = l.ID
	return http.StatusCreated, api.Credential{
		LeaseID: l.ID, Database: l.Database, Role: l.Role, Username: l.Username, Password: l.Password,
		Host: Host, Port: Port, DBName: l.Database, SSLMode: SSLMode, IssuedAt: l.IssuedAt,
		ExpiresAt: l.ExpiresAt, MaxExpiresAt: l.MaxExpiresAt, Renewable: l.ExpiresAt.Before(l.MaxExpiresAt),
	}, nil
}

func (b *Broker) renew(now time.Time, c *Call, p *attest.Principal, q api.RenewRequest) (int, any, *api.Error) {
	l, ok := b.leases[c.LeaseID]
	if !ok {
		return 0, nil, api.Errorf(api.CodeNotFound, "no such lease")
	}
	if e := b.permit(p, "renew"); e != nil {
		return 0, nil, e
	}
	ttl, e := b.leaseTTL(q.TTLSeconds)
	switch {
	case e != nil:
		return 0, nil, e
	case l.Revoked:
		return 0, nil, api.Errorf(api.CodeLeaseRevoked, "the lease was revoked")
	case !now.Before(l.ExpiresAt):
		return 0, nil, api.Errorf(api.CodeLeaseExpired, "the lease has expired")
	}
	l.ExpiresAt = now.Add(ttl).UTC()
	if l.ExpiresAt.After(l.MaxExpiresAt) {
		l.ExpiresAt = l.MaxExpiresAt
	}
	return http.StatusOK, api.Renewal{LeaseID: l.ID, ExpiresAt: l.ExpiresAt, MaxExpiresAt: l.MaxExpiresAt}, nil
}

func (b *Broker) revoke(now time.Time, c *Call, p *attest.Principal) (int, any, *api.Error) {
	l, ok := b.leases[c.LeaseID]
	if !ok {
		return 0, nil, api.Errorf(api.CodeNotFound, "no such lease")
	}
	if e := b.permit(p, "revoke"); e != nil {
		return 0, nil, e
	}
	if !l.Revoked {
		l.Revoked, l.RevokedAt = true, now.UTC()
	}
	return http.StatusOK, api.Revocation{LeaseID: l.ID, RevokedAt: l.RevokedAt}, nil
}

// assume hands out an AWS session like the broker's POST /v1/aws-credentials.
func (b *Broker) assume(now time.Time, c *Call, p *attest.Principal, q api.AWSCredentialsRequest) (int, any, *api.Error) {
	if !b.profiles[q.Profile] {
		return 0, nil, api.Errorf(api.CodeNotFound, "AWS profile is not configured")
	}
	if e := b.permit(p, "assume"); e != nil {
		return 0, nil, e
	}
	ttl := AWSDefaultTTL
	if q.TTLSeconds != nil {
		ttl = time.Duration(*q.TTLSeconds) * time.Second
		switch {
		case ttl > AWSMaxTTL:
			return 0, nil, api.Errorf(api.CodeTTLExceedsMax, "ttl_seconds exceeds the profile's max_ttl")
		case ttl < awsMinTTL:
			return 0, nil, api.Errorf(api.CodeInvalidRequest, "ttl_seconds must be at least 900 (the STS minimum)")
		}
	}
	s := AWSSession{
		LeaseID: newUUID(), Profile: q.Profile, AccessKeyID: "ASIA" + strings.ToUpper(randomHex(8)),
		SecretAccessKey: randomHex(20), SessionToken: "FwoGZXIvYXdzE" + randomHex(48),
		IssuedAt: now, Expiration: now.Add(ttl).UTC().Truncate(time.Second),
	}
	b.sessions = append(b.sessions, s)
	c.LeaseID = s.LeaseID
	return http.StatusCreated, api.AWSCredential{
		LeaseID: s.LeaseID, AccessKeyID: s.AccessKeyID, SecretAccessKey: s.SecretAccessKey,
		SessionToken: s.SessionToken, Expiration: s.Expiration,
	}, nil
}

// verifySigV4 checks the request's execute-api signature the way API Gateway would:
// recompute it over the headers named in SignedHeaders with the execution role's key,
// and compare.
func (b *Broker) verifySigV4(r *http.Request, body []byte, service string) error {
	auth := r.Header.Get("Authorization")
	if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 ") {
		return errors.New("no AWS4-HMAC-SHA256 Authorization header")
	}
	var scope, signed string
	for _, part := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			scope = v
		case "SignedHeaders":
			signed = v
		}
	}
	fields := strings.Split(scope, "/")
	if len(fields) != 5 || fields[0] != b.creds.AccessKeyID || fields[3] != service || fields[4] != "aws4_request" {
		return fmt.Errorf("credential scope %q is not this key's %s scope", strings.Join(fields[min(1, len(fields)):], "/"), service)
	}
	at, err := time.Parse(attest.AmzDateFormat, r.Header.Get("X-Amz-Date"))
	if err != nil {
		return errors.New("bad X-Amz-Date")
	}
	clone, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	for _, h := range strings.Split(signed, ";") {
		if h == "host" || h == "content-length" {
			continue
		}
		clone.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
	}
	clone.Header.Del("X-Amz-Date")
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(r.Context(), b.creds, clone, hex.EncodeToString(sum[:]), service, fields[2], at); err != nil {
		return err
	}
	if clone.Header.Get("Authorization") != auth {
		return errors.New("signature does not match")
	}
	return nil
}
