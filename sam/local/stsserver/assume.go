package stsserver

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// AssumeRole limits, from the STS 2011-06-15 API model and the AssumeRole
// API reference.
const (
	// defaultMaxSession is Role.MaxSessionDuration when it is zero, and the
	// default DurationSeconds.
	defaultMaxSession = time.Hour
	// minDurationSeconds and maxDurationSeconds bound DurationSeconds
	// (roleDurationSecondsType).
	minDurationSeconds = 900
	maxDurationSeconds = 43200
	// chainedMaxSeconds bounds DurationSeconds when the caller is itself an
	// assumed-role session (role chaining).
	chainedMaxSeconds = 3600
	// maxPolicyChars bounds the inline session policy
	// (sessionPolicyDocumentType).
	maxPolicyChars = 2048
	// maxTags bounds Tags and TransitiveTagKeys (tagListType,
	// tagKeyListType).
	maxTags = 50
	// maxTagKeyChars and maxTagValueChars bound tag keys and values.
	maxTagKeyChars   = 128
	maxTagValueChars = 256
	// packedLimit is the size, in bytes of compacted policy, policy ARNs and
	// tag text, that counts as 100% packed policy size. Real STS packs into
	// an undocumented binary format; this is an approximation.
	packedLimit = 2048
	// expirationFormat is the ISO 8601 form of Credentials/Expiration.
	expirationFormat = "2006-01-02T15:04:05Z"
)

// Role is one entry of the server's role table, the target of AssumeRole.
type Role struct {
	// ARN is the role's ARN, arn:aws:iam::<account>:role/<name> (a path
	// before the name is allowed); RoleArn must match it exactly.
	ARN string
	// MaxSessionDuration bounds DurationSeconds. Zero means one hour.
	MaxSessionDuration time.Duration
	// TrustedPrincipals are the callers allowed to assume the role, the
	// principals of its trust policy. An entry is an IAM role ARN (it
	// trusts every session of that role: a caller
	// arn:aws:sts::<acct>:assumed-role/<name>/<session> matches
	// arn:aws:iam::<acct>:role/[<path>/]<name>), any other principal ARN
	// (exact match, e.g. one assumed-role session or an IAM user), or an
	// account ("<acct>" or arn:aws:iam::<acct>:root, trusting every
	// principal of the account). Empty trusts nobody.
	TrustedPrincipals []string
	// RequireSourceIdentity denies AssumeRole requests that carry no
	// SourceIdentity (as a trust policy with a Null sts:SourceIdentity
	// condition would), unless the caller's own session has one.
	RequireSourceIdentity bool
}

// roleEntry is a Role with its fixed unique id (AROA...).
type roleEntry struct {
	Role
	partition, account, name string
	id                       string
}

// Tag is a session tag.
type Tag struct {
	Key, Value string
}

// Session records one successful AssumeRole call.
type Session struct {
	// Issued is the server clock when the credentials were minted.
	Issued time.Time
	// Expiration is Issued + Duration, truncated to the second.
	Expiration time.Time
	// Duration is the requested (or default) DurationSeconds.
	Duration time.Duration
	// RoleARN is the assumed role, as registered.
	RoleARN string
	// RoleSessionName is the requested session name.
	RoleSessionName string
	// CallerARN is the ARN of the identity that signed the request.
	CallerARN string
	// Identity is the minted identity (with its secret and session token)
	// that the server now accepts until Expiration.
	Identity Identity
	// AssumedRoleID is AssumedRoleUser/AssumedRoleId, "AROA...:<session>".
	AssumedRoleID string
	// SourceIdentity is the requested source identity, or the one inherited
	// from the caller's session. "" if none.
	SourceIdentity string
	// Tags are the session tags: the transitive tags inherited from the
	// caller's session followed by the requested ones.
	Tags []Tag
	// TransitiveTagKeys are the keys of the tags that pass on to sessions
	// this session assumes: the inherited ones and the requested ones.
	TransitiveTagKeys []string
	// Policy is the inline session policy, as sent. "" if none.
	Policy string
	// PolicyARNs are the managed session policy ARNs.
	PolicyARNs []string
	// ExternalID is the ExternalId parameter. "" if none.
	ExternalID string
	// PackedPolicySize is the percentage reported in the response (0 when
	// neither a policy nor tags were passed).
	PackedPolicySize int
}

func (s Session) clone() Session {
	s.Tags = slices.Clone(s.Tags)
	s.TransitiveTagKeys = slices.Clone(s.TransitiveTagKeys)
	s.PolicyARNs = slices.Clone(s.PolicyARNs)
	return s
}

// AddRole adds r to the role table, replacing any role with the same ARN
// (but keeping its unique id). It panics if r.ARN is not an IAM role ARN or
// r.MaxSessionDuration is negative.
func (s *Server) AddRole(r Role) {
	partition, account, name, ok := parseRoleARN(r.ARN)
	if !ok {
		panic(fmt.Sprintf("stsserver: AddRole: %q is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)", r.ARN))
	}
	if r.MaxSessionDuration < 0 {
		panic(fmt.Sprintf("stsserver: AddRole: negative MaxSessionDuration %v", r.MaxSessionDuration))
	}
	if r.MaxSessionDuration == 0 {
		r.MaxSessionDuration = defaultMaxSession
	}
	r.TrustedPrincipals = slices.Clone(r.TrustedPrincipals)
	s.mu.Lock()
	defer s.mu.Unlock()
	id := "AROA" + randomString(upperAlnum, 17)
	if old, ok := s.roles[r.ARN]; ok {
		id = old.id
	}
	s.roles[r.ARN] = roleEntry{Role: r, partition: partition, account: account, name: name, id: id}
}

// Sessions returns copies of the sessions minted by AssumeRole, in order.
func (s *Server) Sessions() []Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return cloneAll(s.sessions)
}

// SetDisabledRegions makes AssumeRole requests signed for any of regions
// fail with 403 RegionDisabledException, as when STS is deactivated in a
// region. No arguments re-enable every region.
func (s *Server) SetDisabledRegions(regions ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.disabled = make(map[string]bool, len(regions))
	for _, r := range regions {
		s.disabled[r] = true
	}
}

// assumeRole answers a verified AssumeRole request that arrived at now.
func (s *Server) assumeRole(c caller, now time.Time) (assumeRoleResult, *apiError) {
	req, aerr := parseAssumeRole(c.form)
	if aerr != nil {
		return assumeRoleResult{}, aerr
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	denied := sender(http.StatusForbidden, "AccessDenied", fmt.Sprintf(
		"User: %s is not authorized to perform: sts:AssumeRole on resource: %s", c.id.ARN, truncate(req.roleARN, 2048)))
	role, ok := s.roles[req.roleARN]
	if !ok || !trusts(role.TrustedPrincipals, c.id.ARN) {
		return assumeRoleResult{}, denied
	}
	if s.disabled[c.region] {
		return assumeRoleResult{}, sender(http.StatusForbidden, "RegionDisabledException", fmt.Sprintf(
			"STS is not activated in this region for account:%s. Your account administrator can activate STS in this region using the IAM Console.",
			role.account))
	}

	// What the caller's own session passes on (role chaining).
	var parent *Session
	if i, ok := s.bySession[c.id.AccessKeyID]; ok {
		parent = &s.sessions[i]
	}
	sourceIdentity := req.sourceIdentity
	if parent != nil && parent.SourceIdentity != "" {
		if sourceIdentity != "" && sourceIdentity != parent.SourceIdentity {
			return assumeRoleResult{}, sender(http.StatusForbidden, "AccessDenied", fmt.Sprintf(
				"User: %s is not authorized to perform: sts:SetSourceIdentity on resource: %s", c.id.ARN, req.roleARN))
		}
		sourceIdentity = parent.SourceIdentity
	}
	if role.RequireSourceIdentity && sourceIdentity == "" {
		return assumeRoleResult{}, denied
	}

	// Duration.
	seconds := req.durationSeconds
	if !req.haveDuration {
		seconds = int(min(defaultMaxSession, role.MaxSessionDuration) / time.Second)
	}
	if time.Duration(seconds)*time.Second > role.MaxSessionDuration {
		return assumeRoleResult{}, validationError("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
	}
	if req.haveDuration && seconds > chainedMaxSeconds && isAssumedRoleARN(c.id.ARN) {
		return assumeRoleResult{}, validationError(
			"The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.")
	}

	// Inline policy.
	var compact bytes.Buffer
	if req.havePolicy {
		var doc map[string]any
		if err := json.Unmarshal([]byte(req.policy), &doc); err != nil || doc == nil {
			return assumeRoleResult{}, sender(http.StatusBadRequest, "MalformedPolicyDocument",
				"This policy contains invalid Json")
		}
		_ = json.Compact(&compact, []byte(req.policy))
	}

	// Tags: inherited transitive tags, then the requested ones.
	var tags []Tag
	var transitive []string
	if parent != nil {
		for _, t := range parent.Tags {
			if containsFold(parent.TransitiveTagKeys, t.Key) {
				tags = append(tags, t)
				transitive = append(transitive, t.Key)
			}
		}
	}
	inherited := len(tags)
	for _, t := range req.tags {
		for _, prev := range tags[:inherited] {
			if strings.EqualFold(prev.Key, t.Key) {
				return assumeRoleResult{}, validationError(fmt.Sprintf(
					"The session tag key %s is already set by a transitive tag of the calling session and cannot be overridden.", t.Key))
			}
		}
		for _, prev := range tags[inherited:] {
			if strings.EqualFold(prev.Key, t.Key) {
				return assumeRoleResult{}, validationError(
					"Duplicate tag keys found. Please note that Tag keys are case insensitive.")
			}
		}
		tags = append(tags, t)
	}
	for _, k := range req.transitiveTagKeys {
		if !containsFold(keysOf(req.tags), k) {
			return assumeRoleResult{}, validationError(fmt.Sprintf(
				"The transitive tag key %s is not among the session tags of the request.", k))
		}
		if !containsFold(transitive, k) {
			transitive = append(transitive, k)
		}
	}

	// Packed size.
	packed := 0
	if req.havePolicy || len(req.tags) > 0 || len(req.policyARNs) > 0 {
		n := compact.Len()
		for _, a := range req.policyARNs {
			n += len(a)
		}
		for _, t := range tags {
			n += len(t.Key) + len(t.Value)
		}
		packed = int(math.Ceil(100 * float64(n) / packedLimit))
		if packed > 100 {
			return assumeRoleResult{}, sender(http.StatusBadRequest, "PackedPolicyTooLarge", fmt.Sprintf(
				"Packed policy consumes %d%% of allotted space, please use smaller policy for this session.", packed))
		}
	}

	// Mint.
	issued := now.UTC()
	expiration := issued.Add(time.Duration(seconds) * time.Second).Truncate(time.Second)
	assumedARN := "arn:" + role.partition + ":sts::" + role.account + ":assumed-role/" + role.name + "/" + req.sessionName
	assumedID := role.id + ":" + req.sessionName
	minted := newCredentials()
	minted.ARN = assumedARN
	minted.Account = role.account
	minted.UserID = assumedID
	minted.Expiration = expiration
	s.ids[minted.AccessKeyID] = minted
	s.sessions = append(s.sessions, Session{
		Issued:            issued,
		Expiration:        expiration,
		Duration:          time.Duration(seconds) * time.Second,
		RoleARN:           role.ARN,
		RoleSessionName:   req.sessionName,
		CallerARN:         c.id.ARN,
		Identity:          minted,
		AssumedRoleID:     assumedID,
		SourceIdentity:    sourceIdentity,
		Tags:              tags,
		TransitiveTagKeys: transitive,
		Policy:            req.policy,
		PolicyARNs:        req.policyARNs,
		ExternalID:        req.externalID,
		PackedPolicySize:  packed,
	})
	s.bySession[minted.AccessKeyID] = len(s.sessions) - 1

	res := assumeRoleResult{
		Credentials: credentialsXML{
			AccessKeyID:     minted.AccessKeyID,
			SecretAccessKey: minted.SecretAccessKey,
			SessionToken:    minted.SessionToken,
			Expiration:      expiration.Format(expirationFormat),
		},
		AssumedRoleUser: assumedRoleUserXML{AssumedRoleID: assumedID, Arn: assumedARN},
		SourceIdentity:  sourceIdentity,
	}
	if req.havePolicy || len(req.tags) > 0 || len(req.policyARNs) > 0 {
		res.PackedPolicySize = &packed
	}
	return res, nil
}

// newCredentials returns random temporary credentials: an ASIA… key id, a
// 40-character secret and a session token.
func newCredentials() Identity {
	tok := make([]byte, 180)
	_, _ = rand.Read(tok)
	return Identity{
		AccessKeyID:     "ASIA" + randomString(upperAlnum, 16),
		SecretAccessKey: randomString(secretABC, 40),
		SessionToken:    "IQoJb3JpZ2luX2Vj" + base64.StdEncoding.EncodeToString(tok),
	}
}

// Request parsing and validation.

type assumeRoleRequest struct {
	roleARN, sessionName string
	durationSeconds      int
	haveDuration         bool
	policy               string
	havePolicy           bool
	policyARNs           []string
	sourceIdentity       string
	tags                 []Tag
	transitiveTagKeys    []string
	externalID           string
}

func validationError(message string) *apiError {
	return sender(http.StatusBadRequest, "ValidationError", message)
}

// violations collects constraint failures and reports them in the style
// of STS: "2 validation errors detected: Value 'x' at 'roleSessionName'
// failed to satisfy constraint: Member must ...; Value ...".
type violations []string

// add records that value (quoted in the message) of field breaks
// constraint.
func (v *violations) add(value, field, constraint string) {
	*v = append(*v, fmt.Sprintf("Value '%s' at '%s' failed to satisfy constraint: %s", truncate(value, 256), field, constraint))
}

// addNull records that the required field is missing.
func (v *violations) addNull(field string) {
	*v = append(*v, fmt.Sprintf("Value null at '%s' failed to satisfy constraint: Member must not be null", field))
}

// addUnquoted records a failure of field without quoting its value.
func (v *violations) addUnquoted(field, constraint string) {
	*v = append(*v, fmt.Sprintf("Value at '%s' failed to satisfy constraint: %s", field, constraint))
}

func (v violations) err() *apiError {
	switch len(v) {
	case 0:
		return nil
	case 1:
		return validationError("1 validation error detected: " + v[0])
	default:
		return validationError(strconv.Itoa(len(v)) + " validation errors detected: " + strings.Join(v, "; "))
	}
}

// checkString checks a string parameter against its length bounds (in
// characters) and allowed characters; pattern describes allowed for the
// message. The value is quoted in messages only if quote is set.
func (v *violations) checkString(value, field string, minLen, maxLen int, allowed func(rune) bool, pattern string, quote bool) {
	report := func(constraint string) {
		if quote {
			v.add(value, field, constraint)
		} else {
			v.addUnquoted(field, constraint)
		}
	}
	n := utf8.RuneCountInString(value)
	if n < minLen {
		report(fmt.Sprintf("Member must have length greater than or equal to %d", minLen))
	}
	if n > maxLen {
		report(fmt.Sprintf("Member must have length less than or equal to %d", maxLen))
	}
	for _, r := range value {
		if !allowed(r) {
			report("Member must satisfy regular expression pattern: " + pattern)
			break
		}
	}
}

// single returns the only value of a form parameter; several values are a
// violation.
func single(form url.Values, name, field string, v *violations) (string, bool) {
	vs, ok := form[name]
	if !ok {
		return "", false
	}
	if len(vs) > 1 {
		v.addUnquoted(field, "Member must be specified at most once")
	}
	return vs[0], true
}

// members returns the values of the list parameter prefix.member.N[suffix]
// in increasing N order.
func members(form url.Values, prefix string) []int {
	var idx []int
	seen := map[int]bool{}
	for k := range form {
		rest, ok := strings.CutPrefix(k, prefix+".member.")
		if !ok {
			continue
		}
		num, _, _ := strings.Cut(rest, ".")
		n, err := strconv.Atoi(num)
		if err != nil || n < 1 || strconv.Itoa(n) != num || seen[n] {
			continue
		}
		seen[n] = true
		idx = append(idx, n)
	}
	sort.Ints(idx)
	return idx
}

func parseAssumeRole(form url.Values) (assumeRoleRequest, *apiError) {
	var req assumeRoleRequest
	var v violations

	if arn, ok := single(form, "RoleArn", "roleArn", &v); !ok {
		v.addNull("roleArn")
	} else {
		req.roleARN = arn
		v.checkString(arn, "roleArn", 20, 2048, isARNChar, `[\u0009\u000A\u000D\u0020-\u007E\u0085\u00A0-\uD7FF\uE000-\uFFFD\u10000-\u10FFFF]+`, true)
	}
	if name, ok := single(form, "RoleSessionName", "roleSessionName", &v); !ok {
		v.addNull("roleSessionName")
	} else {
		req.sessionName = name
		v.checkString(name, "roleSessionName", 2, 64, isNameChar, `[\w+=,.@-]*`, true)
	}
	for _, n := range members(form, "PolicyArns") {
		field := fmt.Sprintf("policyArns.%d.member.arn", n)
		arn, ok := single(form, fmt.Sprintf("PolicyArns.member.%d.arn", n), field, &v)
		if !ok {
			continue
		}
		v.checkString(arn, field, 20, 2048, isARNChar, `[\u0009\u000A\u000D\u0020-\u007E\u0085\u00A0-\uD7FF\uE000-\uFFFD\u10000-\u10FFFF]+`, true)
		req.policyARNs = append(req.policyARNs, arn)
	}
	if p, ok := single(form, "Policy", "policy", &v); ok {
		req.policy, req.havePolicy = p, true
		v.checkString(p, "policy", 1, maxPolicyChars, isPolicyChar, `[\u0009\u000A\u000D\u0020-\u00FF]+`, false)
	}
	if d, ok := single(form, "DurationSeconds", "durationSeconds", &v); ok {
		n, err := strconv.Atoi(d)
		switch {
		case err != nil:
			v.add(d, "durationSeconds", "Member must be an integer")
		case n < minDurationSeconds:
			v.add(d, "durationSeconds", fmt.Sprintf("Member must have value greater than or equal to %d", minDurationSeconds))
		case n > maxDurationSeconds:
			v.add(d, "durationSeconds", fmt.Sprintf("Member must have value less than or equal to %d", maxDurationSeconds))
		default:
			req.durationSeconds, req.haveDuration = n, true
		}
	}
	tagIdx := members(form, "Tags")
	if len(tagIdx) > maxTags {
		v.addUnquoted("tags", fmt.Sprintf("Member must have length less than or equal to %d", maxTags))
	}
	for _, n := range tagIdx {
		keyField := fmt.Sprintf("tags.%d.member.key", n)
		valueField := fmt.Sprintf("tags.%d.member.value", n)
		key, haveKey := single(form, fmt.Sprintf("Tags.member.%d.Key", n), keyField, &v)
		value, haveValue := single(form, fmt.Sprintf("Tags.member.%d.Value", n), valueField, &v)
		if !haveKey {
			v.addNull(keyField)
		} else {
			v.checkString(key, keyField, 1, maxTagKeyChars, isTagChar, `[\p{L}\p{Z}\p{N}_.:/=+\-@]+`, true)
		}
		if !haveValue {
			v.addNull(valueField)
		} else {
			v.checkString(value, valueField, 0, maxTagValueChars, isTagChar, `[\p{L}\p{Z}\p{N}_.:/=+\-@]*`, true)
		}
		req.tags = append(req.tags, Tag{Key: key, Value: value})
	}
	ttkIdx := members(form, "TransitiveTagKeys")
	if len(ttkIdx) > maxTags {
		v.addUnquoted("transitiveTagKeys", fmt.Sprintf("Member must have length less than or equal to %d", maxTags))
	}
	for _, n := range ttkIdx {
		field := fmt.Sprintf("transitiveTagKeys.%d.member", n)
		key, _ := single(form, fmt.Sprintf("TransitiveTagKeys.member.%d", n), field, &v)
		v.checkString(key, field, 1, maxTagKeyChars, isTagChar, `[\p{L}\p{Z}\p{N}_.:/=+\-@]+`, true)
		req.transitiveTagKeys = append(req.transitiveTagKeys, key)
	}
	if id, ok := single(form, "ExternalId", "externalId", &v); ok {
		req.externalID = id
		v.checkString(id, "externalId", 2, 1224, func(r rune) bool { return isNameChar(r) || r == ':' || r == '/' },
			`[\w+=,.@:\/-]*`, true)
	}
	if sn, ok := single(form, "SerialNumber", "serialNumber", &v); ok {
		v.checkString(sn, "serialNumber", 9, 256, func(r rune) bool { return isNameChar(r) || r == ':' || r == '/' },
			`[\w+=/:,.@-]*`, true)
	}
	if tc, ok := single(form, "TokenCode", "tokenCode", &v); ok {
		v.checkString(tc, "tokenCode", 6, 6, func(r rune) bool { return r >= '0' && r <= '9' }, `[\d]*`, true)
	}
	if si, ok := single(form, "SourceIdentity", "sourceIdentity", &v); ok {
		req.sourceIdentity = si
		v.checkString(si, "sourceIdentity", 2, 64, isNameChar, `[\w+=,.@-]*`, true)
	}
	if aerr := v.err(); aerr != nil {
		return assumeRoleRequest{}, aerr
	}
	return req, nil
}

// isNameChar reports whether r matches [\w+=,.@-] (\w being ASCII
// [A-Za-z0-9_]).
func isNameChar(r rune) bool {
	switch {
	case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		return true
	}
	return strings.ContainsRune("_+=,.@-", r)
}

// isTagChar reports whether r matches [\p{L}\p{Z}\p{N}_.:/=+\-@].
func isTagChar(r rune) bool {
	return unicode.IsLetter(r) || unicode.In(r, unicode.Z) || unicode.IsNumber(r) || strings.ContainsRune("_.:/=+-@", r)
}

// isPolicyChar reports whether r matches [\u0009\u000A\u000D\u0020-\u00FF].
func isPolicyChar(r rune) bool {
	return r == '\t' || r == '\n' || r == '\r' || (r >= 0x20 && r <= 0xFF)
}

// isARNChar reports whether r matches the arnType pattern.
func isARNChar(r rune) bool {
	switch {
	case r == '\t' || r == '\n' || r == '\r':
		return true
	case r >= 0x20 && r <= 0x7E, r == 0x85, r >= 0xA0 && r <= 0xD7FF, r >= 0xE000 && r <= 0xFFFD:
		return true
	case r >= 0x10000 && r <= 0x10FFFF:
		return true
	}
	return false
}

func keysOf(tags []Tag) []string {
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = t.Key
	}
	return out
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// ARNs.

// arnFields splits arn:partition:service:region:account:resource.
func arnFields(arn string) (partition, service, region, account, resource string, ok bool) {
	f := strings.SplitN(arn, ":", 6)
	if len(f) != 6 || f[0] != "arn" || f[1] == "" || f[5] == "" {
		return "", "", "", "", "", false
	}
	return f[1], f[2], f[3], f[4], f[5], true
}

func isAccountID(s string) bool {
	if len(s) != 12 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// parseRoleARN parses arn:<partition>:iam::<account>:role/[<path>/]<name>.
func parseRoleARN(arn string) (partition, account, name string, ok bool) {
	p, service, region, acct, res, ok := arnFields(arn)
	if !ok || service != "iam" || region != "" || !isAccountID(acct) {
		return "", "", "", false
	}
	rest, ok := strings.CutPrefix(res, "role/")
	if !ok {
		return "", "", "", false
	}
	name = rest[strings.LastIndexByte(rest, '/')+1:]
	if name == "" {
		return "", "", "", false
	}
	return p, acct, name, true
}

// parseAssumedRoleARN parses
// arn:<partition>:sts::<account>:assumed-role/<role>/<session>.
func parseAssumedRoleARN(arn string) (partition, account, role string, ok bool) {
	p, service, region, acct, res, ok := arnFields(arn)
	if !ok || service != "sts" || region != "" || !isAccountID(acct) {
		return "", "", "", false
	}
	rest, ok := strings.CutPrefix(res, "assumed-role/")
	if !ok {
		return "", "", "", false
	}
	role, session, ok := strings.Cut(rest, "/")
	if !ok || role == "" || session == "" {
		return "", "", "", false
	}
	return p, acct, role, true
}

func isAssumedRoleARN(arn string) bool {
	_, _, _, ok := parseAssumedRoleARN(arn)
	return ok
}

// trusts reports whether a role whose trust policy names principals may be
// assumed by the caller whose ARN is callerARN.
func trusts(principals []string, callerARN string) bool {
	// The caller's role form and account.
	var cPart, cAcct, cRole string
	if p, a, r, ok := parseAssumedRoleARN(callerARN); ok {
		cPart, cAcct, cRole = p, a, r
	} else if p, a, r, ok := parseRoleARN(callerARN); ok {
		cPart, cAcct, cRole = p, a, r
	} else if p, _, _, a, _, ok := arnFields(callerARN); ok {
		cPart, cAcct = p, a
	}
	for _, p := range principals {
		if p == "" {
			continue
		}
		if p == callerARN {
			return true
		}
		if cRole != "" {
			if part, acct, name, ok := parseRoleARN(p); ok && part == cPart && acct == cAcct && name == cRole {
				return true
			}
		}
		if cAcct != "" {
			if p == cAcct {
				return true
			}
			if part, service, region, acct, res, ok := arnFields(p); ok && service == "iam" && region == "" &&
				res == "root" && part == cPart && acct == cAcct {
				return true
			}
		}
	}
	return false
}

// Response documents.

type credentialsXML struct {
	AccessKeyID     string `xml:"AccessKeyId" json:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey" json:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken" json:"SessionToken"`
	Expiration      string `xml:"Expiration" json:"Expiration"`
}

type assumedRoleUserXML struct {
	AssumedRoleID string `xml:"AssumedRoleId" json:"AssumedRoleId"`
	Arn           string `xml:"Arn" json:"Arn"`
}

type assumeRoleResult struct {
	Credentials      credentialsXML     `xml:"Credentials" json:"Credentials"`
	AssumedRoleUser  assumedRoleUserXML `xml:"AssumedRoleUser" json:"AssumedRoleUser"`
	PackedPolicySize *int               `xml:"PackedPolicySize,omitempty" json:"PackedPolicySize,omitempty"`
	SourceIdentity   string             `xml:"SourceIdentity,omitempty" json:"SourceIdentity,omitempty"`
}

type assumeRoleResponse struct {
	XMLName  xml.Name           `xml:"AssumeRoleResponse"`
	Xmlns    string             `xml:"xmlns,attr"`
	Results  []assumeRoleResult `xml:"AssumeRoleResult"`
	Metadata responseMetadata   `xml:"ResponseMetadata"`
}

// isAssumeRoleBody reports whether an (unverified) body asks for
// AssumeRole.
func isAssumeRoleBody(body []byte) bool {
	form, err := url.ParseQuery(string(body))
	return err == nil && form.Get("Action") == actionAssumeRole
}

// fakeAssumeRoleResult makes the answer of the modes that do not verify:
// random credentials that the server does not accept, for the requested
// role and session when they look valid, or for an injected one.
func fakeAssumeRoleResult(body []byte, injected bool) assumeRoleResult {
	form, _ := url.ParseQuery(string(body))
	partition, account, role, session := "aws", "999999999999", "injected-role", "injected-session"
	if !injected {
		partition, account, role, session = "aws", "000000000000", "unknown-role", "unknown-session"
		if p, a, r, ok := parseRoleARN(form.Get("RoleArn")); ok {
			partition, account, role = p, a, r
		}
		if n := form.Get("RoleSessionName"); len(n) >= 2 && len(n) <= 64 && strings.IndexFunc(n, func(r rune) bool { return !isNameChar(r) }) < 0 {
			session = n
		}
	}
	c := newCredentials()
	roleID := "AROA" + randomString(upperAlnum, 17)
	return assumeRoleResult{
		Credentials: credentialsXML{
			AccessKeyID:     c.AccessKeyID,
			SecretAccessKey: c.SecretAccessKey,
			SessionToken:    c.SessionToken,
			Expiration:      time.Now().UTC().Add(time.Hour).Format(expirationFormat),
		},
		AssumedRoleUser: assumedRoleUserXML{
			AssumedRoleID: roleID + ":" + session,
			Arn:           "arn:" + partition + ":sts::" + account + ":assumed-role/" + role + "/" + session,
		},
	}
}

func writeAssumeRoleJSON(w http.ResponseWriter, res assumeRoleResult, requestID string) {
	type response struct {
		Result   assumeRoleResult `json:"AssumeRoleResult"`
		Metadata responseMetadata `json:"ResponseMetadata"`
	}
	b, err := json.Marshal(map[string]response{"AssumeRoleResponse": {Result: res, Metadata: responseMetadata{RequestID: requestID}}})
	if err != nil {
		http.Error(w, "stsserver: encoding response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
