// Package localapitest reads the extension's local credentials server as a function
// (or an AWS SDK) does, for the extension's tests.
package localapitest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
)

// Get sends GET http://127.0.0.1:port/path with the token in the header named header
// and returns the status code and the JSON body decoded as a map (nil when the body is
// not a JSON object). It fails t only if the request cannot be sent.
func Get(t testing.TB, port int, path, header, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(port)+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(header, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}
