package dashboard

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed web/index.html web/app.js web/style.css
var web embed.FS

// Time limits of the HTTP face.
const (
	// writeTimeout bounds writing one response (and one event).
	writeTimeout = 30 * time.Second
	// keepAliveEvery is how often an idle event stream gets a comment, so
	// proxies keep it open and a vanished client is noticed.
	keepAliveEvery = 15 * time.Second
)

// contentSecurity keeps the page to its own origin: nothing outside is
// fetched, whatever a status string contains.
const contentSecurity = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"

// Handler serves the dashboard: /, /app.js, /style.css, /api/status,
// /events, /samples.png, /metrics and /healthz.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", d.asset("web/index.html", "text/html; charset=utf-8"))
	mux.HandleFunc("GET /app.js", d.asset("web/app.js", "text/javascript; charset=utf-8"))
	mux.HandleFunc("GET /style.css", d.asset("web/style.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /api/status", d.serveStatus)
	mux.HandleFunc("GET /events", d.serveEvents)
	mux.HandleFunc("GET /samples.png", d.serveSamples)
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.metrics.reg, promhttp.HandlerOpts{ErrorLog: errorLog{d}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurity)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if !d.authorized(w, r) {
			return
		}
		if r.URL.Path != "/events" {
			// The server has no write timeout (event streams live long);
			// every other response gets one here. Recorders in tests
			// cannot set deadlines, which is fine.
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		mux.ServeHTTP(w, r)
	})
}

// tokenCookie carries the dashboard token for a browser.
const tokenCookie = "sbtrain_token"

// authorized checks the bearer token (Options.Token) and answers 401 when
// it is missing or wrong. Opening /?token=T with the right T sets a cookie
// for the page's own requests and sends the browser to / without the token
// in its address bar.
func (d *Dashboard) authorized(w http.ResponseWriter, r *http.Request) bool {
	want := d.opts.Token
	if want == "" || r.URL.Path == "/healthz" {
		return true
	}
	got := ""
	if a, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = a
	} else if c, err := r.Cookie(tokenCookie); err == nil {
		got = c.Value
	} else if q := r.URL.Query().Get("token"); q != "" && r.URL.Path == "/" {
		if subtle.ConstantTimeCompare([]byte(q), []byte(want)) == 1 {
			http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: want, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return false
		}
		got = q
	}
	if got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 {
		return true
	}
	why := "no bearer token"
	if got != "" {
		why = "wrong bearer token"
	}
	if d.opts.Refused != nil {
		d.opts.Refused(r.RemoteAddr, why)
	} else {
		d.log.Debug("dashboard: refused a request", "remote", r.RemoteAddr, "why", why)
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="sbtrain"`)
	http.Error(w, "unauthorized: this dashboard needs its bearer token", http.StatusUnauthorized)
	return false
}

// errorLog sends promhttp's errors to the dashboard's logger.
type errorLog struct{ d *Dashboard }

func (e errorLog) Println(v ...any) { e.d.log.Warn("dashboard: metrics", "err", fmt.Sprint(v...)) }

func (d *Dashboard) asset(name, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		b, err := web.ReadFile(name)
		if err != nil {
			http.Error(w, "missing asset", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = w.Write(b)
	}
}

func (d *Dashboard) serveStatus(w http.ResponseWriter, _ *http.Request) {
	b, _, _ := d.snapshot()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

func (d *Dashboard) serveSamples(w http.ResponseWriter, _ *http.Request) {
	d.mu.Lock()
	b := d.samples // replaced, never modified
	d.mu.Unlock()
	if b == nil {
		http.Error(w, "no samples plot yet: one is drawn at each phase-end checkpoint", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(b)
}

// serveEvents streams the status document as server-sent events: at once,
// then after every change, at most one event per EventInterval. It ends
// when the client goes or Close is called.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	select {
	case d.clients <- struct{}{}:
		defer func() { <-d.clients }()
	default:
		http.Error(w, "too many open event streams", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	ctx := r.Context()
	write := func(format string, args ...any) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write("retry: 2000\n\n") {
		return
	}
	keepAlive := time.NewTicker(keepAliveEvery)
	defer keepAlive.Stop()
	var sent uint64
	first := true
	for {
		b, ver, changed := d.snapshot()
		if first || ver != sent {
			if !write("id: %d\nevent: status\ndata: %s\n\n", ver, b) {
				return
			}
			first, sent = false, ver
			if !d.sleep(ctx, d.opts.EventInterval) {
				return
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-d.quit:
			return
		case <-keepAlive.C:
			if !write(": keep-alive\n\n") {
				return
			}
		case <-changed:
		}
	}
}

// sleep waits for t, and says false if the client went or the dashboard
// closed first.
func (d *Dashboard) sleep(ctx context.Context, t time.Duration) bool {
	timer := time.NewTimer(t)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-d.quit:
		return false
	case <-timer.C:
		return true
	}
}

// Server is the dashboard served on a listener.
type Server struct {
	d   *Dashboard
	srv *http.Server
	lis net.Listener
	// done is closed when Serve has returned.
	done chan struct{}
}

// Serve starts serving d on lis in a goroutine of its own, with timeouts
// that keep a slow or silent client from holding a connection.
func Serve(d *Dashboard, lis net.Listener) *Server {
	s := &Server{d: d, lis: lis, done: make(chan struct{}),
		srv: &http.Server{
			Handler: d.Handler(),
			// No ReadTimeout: it would also end event streams (the
			// server's background read hits it). Every route is a GET
			// whose body is never read, so the header timeout suffices.
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    64 << 10,
		}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Warn("dashboard: serve", "addr", lis.Addr().String(), "err", err)
		}
	}()
	return s
}

// Addr is the address the dashboard listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// URL is the page's address, http://host:port/.
func (s *Server) URL() string { return "http://" + s.lis.Addr().String() + "/" }

// Shutdown ends the event streams, then lets other requests finish until
// ctx ends, when it closes every connection. The serving goroutine has
// ended when it returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.d.Close()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	<-s.done
	return err
}
