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
	"strings"
)

// callerIdentity is STS's GetCallerIdentityResponse. Every field is a list
// so that an answer repeating an element is seen, and refused, rather than
// read as whichever copy the decoder kept.
type callerIdentity struct {
	XMLName xml.Name         `xml:"GetCallerIdentityResponse"`
	Results []identityResult `xml:"GetCallerIdentityResult"`
}

type identityResult struct {
	Arn     []string `xml:"Arn"`
	UserID  []string `xml:"UserId"`
	Account []string `xml:"Account"`
}

// identity is the one result of a well-formed answer.
type identity struct{ arn, userID, account string }

type stsError struct {
	Code string `xml:"Error>Code"`
}

// callSTS is check 9. The request goes to the configured endpoint, never to
// a host taken from the proof, and keeps the signed Host header. STS must
// answer 200 text/xml with exactly one GetCallerIdentityResponse document
// (see parseCallerIdentity); 5xx, a timeout or a network failure is
// sts_unavailable, any other answer identity_rejected. Redirects are never
// followed (NewVerifier makes sure of it whatever the client).
func (v *Verifier) callSTS(ctx context.Context, c *checked, body []byte) (*identity, error) {
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
		return nil, &Error{Code: CodeSTSUnavailable, Check: 9, Message: "reading STS answer", Err: redactURLError(err)}
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
	id, err := parseCallerIdentity(data)
	if err != nil {
		return nil, &Error{Code: CodeIdentityRejected, Check: 9, Message: "STS answer is not one GetCallerIdentityResponse document", Err: err}
	}
	return id, nil
}

// errAnswer is wrapped by every error of parseCallerIdentity.
var errAnswer = errors.New("malformed GetCallerIdentity answer")

// parseCallerIdentity reads an STS answer body that must be exactly one XML
// document: optionally an XML declaration at its very start, then only
// whitespace, the root element GetCallerIdentityResponse holding exactly
// one GetCallerIdentityResult (with exactly one Arn, UserId and Account),
// then only whitespace. Comments, processing instructions, a DOCTYPE, text
// or a second element outside the root are refused: a body that parsers
// could read in two ways must never name an identity.
func parseCallerIdentity(data []byte) (*identity, error) {
	bad := func(format string, args ...any) (*identity, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{errAnswer}, args...)...)
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	var root xml.StartElement
prolog:
	for first := true; ; first = false {
		offset := d.InputOffset()
		tok, err := d.Token()
		if err != nil {
			return bad("no root element: %v", err)
		}
		switch t := tok.(type) {
		case xml.ProcInst:
			if t.Target != "xml" || !first || offset != 0 {
				return bad("processing instruction before the root element")
			}
		case xml.CharData:
			if !isXMLSpace(t) {
				return bad("text before the root element")
			}
		case xml.StartElement:
			root = t
			break prolog
		case xml.Comment:
			return bad("comment before the root element")
		case xml.Directive:
			return bad("directive (e.g. DOCTYPE) before the root element")
		default:
			return bad("unexpected %T before the root element", tok)
		}
	}
	if root.Name.Local != "GetCallerIdentityResponse" {
		return bad("root element is not GetCallerIdentityResponse")
	}
	var ci callerIdentity
	if err := d.DecodeElement(&ci, &root); err != nil {
		return bad("%v", err)
	}
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return bad("after the root element: %v", err)
		}
		if cd, ok := tok.(xml.CharData); !ok || !isXMLSpace(cd) {
			return bad("data after the root element")
		}
	}
	if len(ci.Results) != 1 {
		return bad("%d GetCallerIdentityResult elements, want exactly 1", len(ci.Results))
	}
	r := ci.Results[0]
	if len(r.Arn) != 1 || len(r.Account) != 1 || len(r.UserID) > 1 {
		return bad("GetCallerIdentityResult must hold one Arn, one Account and at most one UserId")
	}
	id := &identity{arn: strings.TrimSpace(r.Arn[0]), account: strings.TrimSpace(r.Account[0])}
	if len(r.UserID) == 1 {
		id.userID = strings.TrimSpace(r.UserID[0])
	}
	return id, nil
}

// isXMLSpace reports whether b is only XML whitespace (space, tab, CR, LF).
func isXMLSpace(b []byte) bool {
	return len(bytes.Trim(b, " \t\r\n")) == 0
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
