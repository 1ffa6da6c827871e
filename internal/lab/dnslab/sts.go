package dnslab

import (
	"crypto/tls"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// Response is what the lab's HTTPS server answers for
// https://mta-sts.<domain>/.well-known/mta-sts.txt.
type Response struct {
	// Status is the HTTP status. Default: 200.
	Status int
	// ContentType is the Content-Type header. Default: "text/plain".
	ContentType string
	// Body is the body (see [Policy]).
	Body string
	// Location is the Location header (for a 3xx Status).
	Location string
	// CertName is the DNS name in the certificate the server presents.
	// Default: mta-sts.<domain>; set another to present a wrong name.
	CertName string
	// Delay holds the answer back this long (so that concurrent requests
	// overlap).
	Delay time.Duration
}

type stsConfig struct {
	mu    sync.Mutex
	resp  map[string]Response // by domain
	hits  map[string]int
	certs map[string]*tls.Certificate // by certificate name
}

func (c *stsConfig) init() {
	c.resp = map[string]Response{}
	c.hits = map[string]int{}
	c.certs = map[string]*tls.Certificate{}
}

type stsServer struct {
	srv  *http.Server
	done chan struct{}
}

// SetPolicy makes the HTTPS server answer r for domain (the policy
// domain, "sts.test"; the server answers for "mta-sts.sts.test"). A
// domain without a response gets 404.
func (l *Lab) SetPolicy(domain string, r Response) {
	l.stsCfg.mu.Lock()
	defer l.stsCfg.mu.Unlock()
	l.stsCfg.resp[strings.ToLower(domain)] = r
}

// PolicyHits returns how many requests for domain's policy the HTTPS
// server has received (including ones answered with an error status).
func (l *Lab) PolicyHits(domain string) int {
	l.stsCfg.mu.Lock()
	defer l.stsCfg.mu.Unlock()
	return l.stsCfg.hits[strings.ToLower(domain)]
}

// StartSTS starts the HTTPS server on STSAddr (Start does; use it after
// StopSTS).
func (l *Lab) StartSTS() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sts != nil {
		return nil
	}
	ln, err := net.Listen("tcp4", STSAddr)
	if err != nil {
		return fmt.Errorf("dnslab: HTTPS server: %w", err)
	}
	s := &stsServer{done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(l.serveSTS),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: l.stsCert,
		},
	}
	go func() {
		defer close(s.done)
		s.srv.ServeTLS(ln, "", "")
	}()
	l.sts = s
	return nil
}

// StopSTS stops the HTTPS server: connections to STSAddr are refused.
func (l *Lab) StopSTS() error {
	l.mu.Lock()
	s := l.sts
	l.sts = nil
	l.mu.Unlock()
	if s == nil {
		return nil
	}
	err := s.srv.Close()
	<-s.done
	return err
}

func (l *Lab) serveSTS(w http.ResponseWriter, r *http.Request) {
	host := strings.ToLower(r.Host)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	domain, ok := strings.CutPrefix(host, "mta-sts.")
	c := &l.stsCfg
	c.mu.Lock()
	resp, have := c.resp[domain]
	if ok {
		c.hits[domain]++
	}
	c.mu.Unlock()
	if !ok || !have || r.URL.Path != "/.well-known/mta-sts.txt" {
		http.NotFound(w, r)
		return
	}
	if resp.Delay > 0 {
		time.Sleep(resp.Delay)
	}
	ct := resp.ContentType
	if ct == "" {
		ct = "text/plain"
	}
	w.Header().Set("Content-Type", ct)
	if resp.Location != "" {
		w.Header().Set("Location", resp.Location)
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	io.WriteString(w, resp.Body)
}

// stsCert returns a certificate for the SNI name (or the configured
// wrong name), signed by the lab CA.
func (l *Lab) stsCert(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := strings.ToLower(hello.ServerName)
	if name == "" {
		return nil, errors.New("dnslab: no SNI")
	}
	c := &l.stsCfg
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.resp[strings.TrimPrefix(name, "mta-sts.")]; ok && r.CertName != "" {
		name = strings.ToLower(r.CertName)
	}
	if cert, ok := c.certs[name]; ok {
		return cert, nil
	}
	issued, err := testpki.Issue(l.Dir, testpki.Options{
		Name:     "sts-" + name,
		KeySlot:  "dnslab-sts",
		KeyType:  testpki.ECDSAP256,
		Signer:   l.CA,
		Subject:  pkix.Name{CommonName: name},
		DNSNames: []string{name},
	})
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{Certificate: [][]byte{issued.DER}, PrivateKey: issued.Key, Leaf: issued.Cert}
	c.certs[name] = cert
	return cert, nil
}
