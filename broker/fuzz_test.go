package broker

import (
	"testing"
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
		var ir issueRequest
		if err := decodeBytes(data, &ir); err != nil {
			if err.Code != CodeInvalidRequest {
				t.Fatalf("decode error code %q", err.Code)
			}
			return
		}
		var rr renewRequest
		_ = decodeBytes(data, &rr)
		var ar adminRevokeRequest
		_ = decodeBytes(data, &ar)
	})
}
