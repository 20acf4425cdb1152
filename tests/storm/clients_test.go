package storm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/ephemera-sh/ephemera/broker/api"
	"github.com/ephemera-sh/ephemera/extension/agent"
	"github.com/ephemera-sh/ephemera/extension/brokerclient"
	"github.com/ephemera-sh/ephemera/extension/config"
	"github.com/ephemera-sh/ephemera/sam/local/stsserver"
)

// answer is one HTTP answer a client received, as its transport saw it.
type answer struct {
	client, broker int
	status         int
	requestID      string
	retryAfter     string
	code           string // the error document's code, if any
	message        string // the error document's message, if any
	leaseID        string // of a 201
	username       string // of a 201
}

// recorder collects every answer and every transport failure of every
// client. It keeps the passwords of the 201s only to look for them in the
// brokers' output afterwards; it never prints them.
type recorder struct {
	mu         sync.Mutex
	answers    []answer
	failures   map[string]int // transport failures, by message
	passwords  []string
	undecoded  []string // 201s whose body did not decode
	readErrors int
}

func newRecorder() *recorder { return &recorder{failures: map[string]int{}} }

// transport is the RoundTripper under one client: it sends with base and
// records what came back, handing the client an identical answer.
type transport struct {
	rec            *recorder
	base           *http.Transport
	client, broker int
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		t.rec.failure(err)
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		t.rec.failure(fmt.Errorf("reading the answer: %w", err))
		return nil, fmt.Errorf("storm: reading the answer: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	a := answer{client: t.client, broker: t.broker, status: resp.StatusCode,
		requestID: resp.Header.Get("X-Request-Id"), retryAfter: resp.Header.Get("Retry-After")}
	var password string
	if resp.StatusCode == http.StatusCreated {
		var cred api.Credential
		if err := api.UnmarshalAnswer(body, &cred); err != nil {
			t.rec.mu.Lock()
			t.rec.undecoded = append(t.rec.undecoded, fmt.Sprintf("client %d: %v", t.client, err))
			t.rec.mu.Unlock()
		}
		a.leaseID, a.username, password = cred.LeaseID, cred.Username, cred.Password
	} else {
		var doc api.ErrorDocument
		if api.UnmarshalAnswer(body, &doc) == nil {
			a.code, a.message = string(doc.Error.Code), doc.Error.Message
		} else {
			a.message = strings.TrimSpace(string(body[:min(len(body), 200)]))
		}
	}
	t.rec.mu.Lock()
	t.rec.answers = append(t.rec.answers, a)
	if password != "" {
		t.rec.passwords = append(t.rec.passwords, password)
	}
	t.rec.mu.Unlock()
	return resp, nil
}

func (r *recorder) failure(err error) {
	msg := err.Error()
	// The URL differs per broker; the cause is what matters.
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:]
	}
	r.mu.Lock()
	r.failures[msg]++
	r.mu.Unlock()
}

// byStatus counts the answers by status.
func (r *recorder) byStatus() map[int]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[int]int{}
	for _, a := range r.answers {
		m[a.status]++
	}
	return m
}

// all returns a copy of every answer.
func (r *recorder) all() []answer {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]answer(nil), r.answers...)
}

// outcome is how one client's INIT ended.
type outcome struct {
	client, broker int
	cred           *agent.Credential // nil when INIT failed
	err            error
	took           time.Duration // from the common start to Start's return
}

// sandbox is one cold-starting Lambda sandbox: its identity, and the
// extension's broker client and credential agent, configured as the
// extension's setup configures them from its environment.
type sandbox struct {
	idx, broker int
	agent       *agent.Agent
	base        *http.Transport
}

// newSandbox builds the extension's parts for identity id against the
// broker at url. Like the extension, it leaves the client's retry settings
// at their defaults and the agent's INIT budget at EPHEMERA_INIT_TIMEOUT's
// default.
func newSandbox(idx, broker int, url string, id stsserver.Identity, rec *recorder) (*sandbox, error) {
	base := http.DefaultTransport.(*http.Transport).Clone() // a sandbox has connections of its own
	creds := aws.Credentials{AccessKeyID: id.AccessKeyID, SecretAccessKey: id.SecretAccessKey, SessionToken: id.SessionToken, Source: "environment"}
	bc, err := brokerclient.New(brokerclient.Config{
		BaseURL: url, Audience: audience, Region: region,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) { return creds, nil }),
		HTTPClient:  &http.Client{Transport: &transport{rec: rec, base: base, client: idx, broker: broker}},
	})
	if err != nil {
		return nil, err
	}
	a, err := agent.New(bc, []config.Credential{{Name: "orders", Database: "orders", Role: "readonly"}},
		agent.Options{InitTimeout: config.DefaultInitTimeout})
	if err != nil {
		return nil, err
	}
	return &sandbox{idx: idx, broker: broker, agent: a, base: base}, nil
}

// init runs the extension's INIT fetch from t0 and reads the credential
// the function would then read.
func (s *sandbox) init(ctx context.Context, t0 time.Time) outcome {
	o := outcome{client: s.idx, broker: s.broker}
	o.err = s.agent.Start(ctx)
	o.took = time.Since(t0)
	if o.err != nil {
		return o // in fail mode reads are held after a failed INIT: nothing to read
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := s.agent.Get(rctx, "orders", false)
	if err != nil {
		o.err = fmt.Errorf("storm: INIT succeeded but the read failed: %w", err)
		return o
	}
	o.cred = &c
	return o
}

// percentile is the nearest-rank p-th percentile of sorted durations.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := (p*len(sorted) + 99) / 100
	return sorted[max(rank, 1)-1]
}

func sortedDurations(ds []time.Duration) []time.Duration {
	out := append([]time.Duration(nil), ds...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
