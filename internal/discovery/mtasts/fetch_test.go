package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

const goodPolicy = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 86400\n"

// fetchServer is an HTTPS server for mta-sts.example.test on loopback;
// handler decides the answer.
func fetchServer(t *testing.T, handler http.HandlerFunc, tlsMax uint16, certName string) (*Fetcher, *atomic.Int64) {
	t.Helper()
	dir := t.TempDir()
	ca, err := testpki.Issue(dir, testpki.Options{Name: "fetch-ca", KeyType: testpki.ECDSAP256, IsCA: true,
		Subject: pkix.Name{CommonName: "Fetch Test CA"}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := testpki.Issue(dir, testpki.Options{Name: "fetch-srv", KeyType: testpki.ECDSAP256, Signer: ca,
		Subject: pkix.Name{CommonName: certName}, DNSNames: []string{certName}})
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int64
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/.well-known/mta-sts.txt" || r.Host != "mta-sts.example.test:"+strconv.Itoa(portOf(t, r.Context())) {
			http.Error(w, "wrong path or host "+r.Host+r.URL.Path, http.StatusBadRequest)
			return
		}
		handler(w, r)
	}))
	ts.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srv.DER}, PrivateKey: srv.Key}},
		MaxVersion:   tlsMax,
	}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	addr := ts.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	f := NewFetcher(FetcherOptions{
		RootCAs: ca.Pool(),
		Port:    p,
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			if a != "mta-sts.example.test:"+port {
				return nil, errors.New("unexpected dial to " + a)
			}
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	})
	return f, &hits
}

func portOf(t *testing.T, ctx context.Context) int {
	a, _ := ctx.Value(http.LocalAddrContextKey).(net.Addr)
	if a == nil {
		return 0
	}
	return a.(*net.TCPAddr).Port
}

func TestFetch(t *testing.T) {
	tests := []struct {
		name     string
		handler  http.HandlerFunc
		tlsMax   uint16
		certName string
		wantKind FetchErrorKind
		wantOK   bool
	}{
		{name: "good", wantOK: true, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte(goodPolicy))
		}},
		{name: "302", wantKind: FetchRedirect, handler: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://mta-sts.example.test/elsewhere.txt", http.StatusFound)
		}},
		{name: "404", wantKind: FetchStatus, handler: func(w http.ResponseWriter, r *http.Request) {
			http.NotFound(w, r)
		}},
		{name: "wrong type", wantKind: FetchContentType, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			w.Write([]byte(goodPolicy))
		}},
		{name: "no type", wantKind: FetchContentType, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			w.Write([]byte(goodPolicy))
		}},
		{name: "oversize with length", wantKind: FetchTooLarge, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			body := goodPolicy + strings.Repeat("x: y\n", MaxPolicySize/5)
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.Write([]byte(body))
		}},
		{name: "oversize chunked", wantKind: FetchTooLarge, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(goodPolicy))
			w.(http.Flusher).Flush()
			w.Write([]byte(strings.Repeat("x: y\n", MaxPolicySize/5)))
		}},
		{name: "invalid", wantKind: FetchInvalid, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte("version: STSv1\nmode: enforce\n"))
		}},
		{name: "tls 1.1", tlsMax: tls.VersionTLS11, wantKind: FetchTLS, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(goodPolicy))
		}},
		{name: "wrong name", certName: "www.example.test", wantKind: FetchTLS, handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(goodPolicy))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := tt.certName
			if name == "" {
				name = "mta-sts.example.test"
			}
			f, hits := fetchServer(t, tt.handler, tt.tlsMax, name)
			p, err := f.Fetch(context.Background(), "example.test")
			if tt.wantOK {
				if err != nil {
					t.Fatalf("Fetch: %v", err)
				}
				if p.Answer() != "secure match=mx.example.test servername=hostname" {
					t.Fatalf("Answer() = %q", p.Answer())
				}
				if hits.Load() != 1 {
					t.Fatalf("%d requests, want 1", hits.Load())
				}
				return
			}
			var fe *FetchError
			if !errors.As(err, &fe) || fe.Kind != tt.wantKind {
				t.Fatalf("Fetch = %v, %v; want a FetchError of kind %v", p, err, tt.wantKind)
			}
			if !strings.Contains(fe.Error(), f.URL("example.test")) {
				t.Errorf("error %q does not name the URL", fe.Error())
			}
			if tt.wantKind == FetchRedirect && hits.Load() != 1 {
				t.Errorf("%d requests: the redirect was followed", hits.Load())
			}
		})
	}
}

func TestFetcherIgnoresProxyEnv(t *testing.T) {
	t.Setenv("HTTPS_PROXY", "http://127.0.0.1:1")
	t.Setenv("https_proxy", "http://127.0.0.1:1")
	f, _ := fetchServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(goodPolicy))
	}, 0, "mta-sts.example.test")
	if _, err := f.Fetch(context.Background(), "example.test"); err != nil {
		t.Fatalf("Fetch with HTTPS_PROXY set: %v", err)
	}
}
