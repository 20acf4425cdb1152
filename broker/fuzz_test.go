package broker

import (
	"encoding/json"
	"testing"

	"github.com/ephemera-sh/ephemera/broker/api"
)

// FuzzDecodeRequest: the request decoder never panics, and whatever it
// accepts re-validates the same way (unknown fields and trailing data are
// always refused).
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"identity":{"method":"POST","url":"https://sts.us-east-1.amazonaws.com/","headers":{"Host":["sts.us-east-1.amazonaws.com"]},"body":"QWN0aW9uPUdldENhbGxlcklkZW50aXR5JlZlcnNpb249MjAxMS0wNi0xNQ=="},"database":"orders","role":"readonly","ttl_seconds":900}`,
		`{"database":"orders","role":"readonly"}`,
		`{"ttl_seconds":-1}`,
		`{"identity":null}`,
		`{} {}`,
		`{"admin":true}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var ir api.IssueRequest
		if err := decodeBytes(data, &ir); err != nil {
			if code := api.CodeOf(err); code != api.CodeInvalidRequest {
				t.Fatalf("decode error code %q", code)
			}
			return
		}
		// Whatever was accepted re-encodes and decodes to the same request.
		again, err := json.Marshal(ir)
		if err != nil {
			t.Fatal(err)
		}
		var ir2 api.IssueRequest
		if err := decodeBytes(again, &ir2); err != nil {
			t.Fatalf("re-encoded request refused: %v", err)
		}
		var rr api.RenewRequest
		_ = decodeBytes(data, &rr)
		var ar api.AdminRevokeRequest
		_ = decodeBytes(data, &ar)
	})
}
