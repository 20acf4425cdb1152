package attest

import (
	"encoding/xml"
	"errors"
	"strings"
	"testing"
)

// FuzzCallerIdentity: no STS body panics the parser; what it accepts is a
// document every reader sees the same way (encoding/xml's lenient reading
// agrees), and it stops being accepted once anything but whitespace is put
// before or after it.
func FuzzCallerIdentity(f *testing.F) {
	doc := `<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>` +
		`<Arn>arn:aws:sts::123456789012:assumed-role/r/s1</Arn><UserId>AROA:s1</UserId><Account>123456789012</Account>` +
		`</GetCallerIdentityResult></GetCallerIdentityResponse>`
	for _, s := range []string{doc, `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + doc + "\n", "junk" + doc, doc + doc,
		"<!-- c -->" + doc, `<!DOCTYPE x [<!ENTITY a "b">]>` + doc, "", "<a/>", doc + "<", "\ufeff" + doc} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		id, err := parseCallerIdentity(body)
		if err != nil {
			if id != nil || !errors.Is(err, errAnswer) {
				t.Fatalf("parseCallerIdentity = %v, %v", id, err)
			}
			return
		}
		var lenient struct {
			XMLName xml.Name `xml:"GetCallerIdentityResponse"`
			Result  struct {
				Arn     string `xml:"Arn"`
				Account string `xml:"Account"`
			} `xml:"GetCallerIdentityResult"`
		}
		if err := xml.Unmarshal(body, &lenient); err != nil ||
			strings.TrimSpace(lenient.Result.Arn) != id.arn || strings.TrimSpace(lenient.Result.Account) != id.account {
			t.Fatalf("strict read %+v, lenient %+v (%v)", *id, lenient.Result, err)
		}
		for _, junk := range []string{"x", "<!---->", "<a/>", "<?pi?>"} {
			if _, err := parseCallerIdentity(append([]byte(junk), body...)); err == nil {
				t.Fatalf("accepted %q before an accepted body", junk)
			}
			if _, err := parseCallerIdentity(append(append([]byte(nil), body...), junk...)); err == nil {
				t.Fatalf("accepted %q after an accepted body", junk)
			}
		}
	})
}
