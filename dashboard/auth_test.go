package dashboard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestDashboardToken(t *testing.T) {
	var refused atomic.Int32
	d := New(Options{Run: "r", PhaseNames: phaseNames, StepsPerPhase: 100, EventInterval: 20 * time.Millisecond,
		Token: "s3cret-token", Refused: func(from, why string) { refused.Add(1) }})
	defer d.Close()
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(method, path, auth string, cookie *http.Cookie) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, c := range []struct {
		name, method, path, auth string
		want                     int
	}{
		{"no token", "GET", "/api/status", "", http.StatusUnauthorized},
		{"wrong token", "GET", "/api/status", "Bearer nope", http.StatusUnauthorized},
		{"events without token", "GET", "/events", "", http.StatusUnauthorized},
		{"metrics without token", "GET", "/metrics", "", http.StatusUnauthorized},
		{"wrong query token", "GET", "/?token=nope", "", http.StatusUnauthorized},
		{"right token", "GET", "/api/status", "Bearer s3cret-token", http.StatusOK},
		{"healthz is open", "GET", "/healthz", "", http.StatusOK},
		{"read-only", "POST", "/api/status", "Bearer s3cret-token", http.StatusMethodNotAllowed},
		{"read-only delete", "DELETE", "/", "Bearer s3cret-token", http.StatusMethodNotAllowed},
	} {
		if got := get(c.method, c.path, c.auth, nil).StatusCode; got != c.want {
			t.Errorf("%s: %s %s = %d, want %d", c.name, c.method, c.path, got, c.want)
		}
	}
	if n := refused.Load(); n != 5 {
		t.Errorf("%d refusals reported, want 5", n)
	}
	// A browser: /?token= sets the cookie and redirects; the cookie then
	// opens the page's own requests.
	resp := get("GET", "/?token=s3cret-token", "", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("/?token=: %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == tokenCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly {
		t.Fatalf("no HttpOnly token cookie: %v", resp.Cookies())
	}
	if got := get("GET", "/api/status", "", cookie).StatusCode; got != http.StatusOK {
		t.Errorf("with the cookie: %d", got)
	}
	if got := get("GET", "/api/status", "", &http.Cookie{Name: tokenCookie, Value: "forged"}).StatusCode; got != http.StatusUnauthorized {
		t.Errorf("with a forged cookie: %d", got)
	}
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Error("security headers missing on the redirect")
	}
}
