package trace

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/aws/aws-xray-sdk-go/v2/strategy/exception"
	"github.com/aws/aws-xray-sdk-go/v2/xray"
	"github.com/jackc/pgx/v5/pgconn"
)

// maxErrorMessage bounds the message recorded for one error.
const maxErrorMessage = 512

// exceptionFormatter records an error as its type and a message that is
// safe to send: no stack trace; a PostgreSQL error as its SQLSTATE only
// (its text can quote argument values, as in `invalid input syntax for
// type integer: "…"`); a *url.Error without the URL's query and user
// information.
type exceptionFormatter struct {
	*exception.DefaultFormattingStrategy
}

var _ exception.FormattingStrategy = exceptionFormatter{}

func newExceptionFormatter() (exceptionFormatter, error) {
	d, err := exception.NewDefaultFormattingStrategyWithDefinedErrorFrameCount(0)
	if err != nil {
		return exceptionFormatter{}, err
	}
	return exceptionFormatter{d}, nil
}

func (exceptionFormatter) ExceptionFromError(err error) exception.Exception {
	e := exception.Exception{
		ID:      xray.NewSegmentID(),
		Type:    strings.TrimPrefix(fmt.Sprintf("%T", err), "*"),
		Message: safeErrorText(err),
	}
	var xe *exception.XRayError
	if errors.As(err, &xe) {
		e.Type = xe.Type
	}
	return e
}

func safeErrorText(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Severity + ": SQLSTATE " + pgErr.Code
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return truncate(ue.Op+" "+redactURL(ue.URL)+": "+safeErrorText(ue.Err), maxErrorMessage)
	}
	return truncate(err.Error(), maxErrorMessage)
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "[unparsable URL]"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}

// truncate cuts s to at most n bytes, on a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
