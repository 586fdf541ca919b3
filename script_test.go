package wsredirect_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/wsredirect/wsredirect"
)

func TestScriptHandler(t *testing.T) {
	file, err := os.ReadFile("js/wsredirect.js")
	require.NoError(t, err)
	srv := httptest.NewServer(wsredirect.ScriptHandler())
	defer srv.Close()

	etag := func() string {
		res, err := http.Get(srv.URL)
		require.NoError(t, err)
		res.Body.Close()
		return res.Header.Get("ETag")
	}()
	require.NotEmpty(t, etag)

	tests := []struct {
		name     string
		method   string
		header   http.Header
		wantCode int
		wantBody []byte
	}{
		{name: "GET serves the file", method: http.MethodGet, wantCode: http.StatusOK, wantBody: file},
		{name: "HEAD serves headers only", method: http.MethodHead, wantCode: http.StatusOK, wantBody: []byte{}},
		{name: "matching ETag revalidates", method: http.MethodGet, header: http.Header{"If-None-Match": {etag}}, wantCode: http.StatusNotModified, wantBody: []byte{}},
		{name: "stale ETag gets the file", method: http.MethodGet, header: http.Header{"If-None-Match": {`"old"`}}, wantCode: http.StatusOK, wantBody: file},
		{name: "POST is refused", method: http.MethodPost, wantCode: http.StatusMethodNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+"/wsredirect.js", nil)
			require.NoError(t, err)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			require.NoError(t, err)

			assert.Equal(t, tc.wantCode, res.StatusCode)
			if tc.wantCode == http.StatusMethodNotAllowed {
				assert.Equal(t, "GET, HEAD", res.Header.Get("Allow"))
				return
			}
			assert.Equal(t, etag, res.Header.Get("ETag"))
			assert.Equal(t, "no-cache", res.Header.Get("Cache-Control"))
			assert.Equal(t, "*", res.Header.Get("Access-Control-Allow-Origin"), "pages of other origins may import it (regression: no CORS)")
			if tc.wantCode == http.StatusOK {
				assert.Equal(t, "text/javascript; charset=utf-8", res.Header.Get("Content-Type"))
			}
			assert.Equal(t, tc.wantBody, body)
		})
	}
}
