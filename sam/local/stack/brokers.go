package stack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/ephemera-sh/ephemera/broker"
	"github.com/ephemera-sh/ephemera/broker/config"
	"github.com/ephemera-sh/ephemera/broker/metrics"
)

// BrokerOptions adjust a broker that StartBroker starts. The zero value
// starts one like the stack's own, without its Middleware.
type BrokerOptions struct {
	// AdminDSN is the broker's admin login (the value of AdminDSNEnv);
	// default Stack.AdminDSN. A benchmark points it at a counting proxy.
	AdminDSN string
	// Middleware, if set, wraps this broker's handler.
	Middleware func(http.Handler) http.Handler
	// Metrics receives this broker's EMF metric lines; default the
	// stack's Output.
	Metrics *metrics.Emitter
	// STSClient sends the proofs to the STS emulator; default the
	// broker's (2 s timeout, no redirects).
	STSClient *http.Client
	// Configure, if set, adjusts this broker's configuration after the
	// stack's Options.Configure (a benchmark makes another database the
	// replay database).
	Configure func(*config.Config)
}

// BrokerServer is one broker serving its HTTP API on a loopback listener.
type BrokerServer struct {
	// Broker is the library instance behind URL.
	Broker *broker.Broker
	// Config is its configuration as it runs.
	Config *config.Config
	// URL is http://127.0.0.1:PORT.
	URL string

	srv    *http.Server
	served chan struct{}
	once   sync.Once
}

// StartBroker starts a broker over the stack's database, STS emulator,
// YAML and policies, as the stack's own (with the stack's Configure, Now,
// Output and LogLevel), and serves it on a new loopback port. Close stops
// it; Stack.Close stops it too. Each call costs what a Lambda cold start
// costs the broker: parsing the configuration, opening the pools, loading
// the policies.
func (s *Stack) StartBroker(ctx context.Context, opts BrokerOptions) (_ *BrokerServer, err error) {
	dsn := opts.AdminDSN
	if dsn == "" {
		dsn = s.AdminDSN
	}
	env := map[string]string{
		"EPHEMERA_CONFIG":       s.cfgPath,
		"EPHEMERA_POLICY_DIR":   s.polDir,
		"EPHEMERA_AUDIENCE":     Audience,
		"EPHEMERA_STS_ENDPOINT": s.STS.URL(),
		"EPHEMERA_STAGE":        Stage,
		"AWS_REGION":            Region,
		AdminDSNEnv:             dsn,
	}
	getenv := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	bs := &BrokerServer{}
	if bs.Config, err = config.FromEnv(getenv); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	if s.opts.Configure != nil {
		s.opts.Configure(bs.Config)
	}
	if opts.Configure != nil {
		opts.Configure(bs.Config)
	}
	id := s.BrokerIdentity
	awsCfg := aws.Config{Region: Region, Credentials: credentials.NewStaticCredentialsProvider(id.AccessKeyID, id.SecretAccessKey, id.SessionToken)}
	if bs.Broker, err = broker.New(ctx, broker.Options{
		Config:    bs.Config,
		Logger:    slog.New(slog.NewJSONHandler(s.out, &slog.HandlerOptions{Level: s.opts.LogLevel})),
		AuditOut:  s.out,
		Getenv:    getenv,
		AWS:       &awsCfg,
		Metrics:   opts.Metrics,
		STSClient: opts.STSClient,
		Now:       s.opts.Now,
	}); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		bs.Broker.Close()
		return nil, fmt.Errorf("stack: listen: %w", err)
	}
	var h http.Handler = bs.Broker.Handler()
	if opts.Middleware != nil {
		h = opts.Middleware(h)
	}
	bs.URL = "http://" + ln.Addr().String()
	bs.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	bs.served = make(chan struct{})
	go func() {
		defer close(bs.served)
		_ = bs.srv.Serve(ln)
	}()
	s.mu.Lock()
	s.brokers = append(s.brokers, bs)
	s.mu.Unlock()
	return bs, nil
}

// Close stops serving (letting requests in flight finish for up to two
// seconds) and closes the broker's pools. It is idempotent.
func (b *BrokerServer) Close() error {
	var err error
	b.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if serr := b.srv.Shutdown(ctx); serr != nil {
			err = errors.Join(fmt.Errorf("stack: broker %s: %w", b.URL, serr), b.srv.Close())
		}
		<-b.served
		b.Broker.Close()
	})
	return err
}
