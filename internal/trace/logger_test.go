package trace

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/aws/aws-xray-sdk-go/v2/xraylog"
)

type stringer string

func (s stringer) String() string { return string(s) }

func TestSDKLoggerPassesRareErrorsOnly(t *testing.T) {
	var buf bytes.Buffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, nil)))
	t.Cleanup(func() { slog.SetDefault(prev) })
	lastSDKErrLog.Store(0)
	t.Cleanup(func() { lastSDKErrLog.Store(0) })

	l := sdkLogger{}
	for _, lvl := range []xraylog.LogLevel{xraylog.LogLevelDebug, xraylog.LogLevelInfo, xraylog.LogLevelWarn} {
		l.Log(lvl, stringer("per-request chatter"))
	}
	if buf.Len() != 0 {
		t.Fatalf("messages below error level reached slog: %s", buf.String())
	}
	l.Log(xraylog.LogLevelError, stringer("write udp: connection refused"))
	l.Log(xraylog.LogLevelError, stringer("write udp: connection refused again"))
	if n := strings.Count(buf.String(), "\n"); n != 1 || !strings.Contains(buf.String(), "connection refused") {
		t.Errorf("slog received %d lines, want the first error only:\n%s", n, buf.String())
	}
}
