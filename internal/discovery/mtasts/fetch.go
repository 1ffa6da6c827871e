package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"time"
)

// FetchErrorKind classifies why a policy fetch failed, for metrics and
// log lines.
type FetchErrorKind uint8

const (
	// FetchNetwork: no TCP connection (name resolution, refused,
	// timeout).
	FetchNetwork FetchErrorKind = iota
	// FetchTLS: the TLS handshake failed (untrusted or wrong certificate,
	// TLS below 1.2).
	FetchTLS
	// FetchRedirect: a 3xx answer; RFC 8461 §3.3 forbids following it.
	FetchRedirect
	// FetchStatus: an HTTP status other than 200.
	FetchStatus
	// FetchContentType: a Content-Type other than text/plain.
	FetchContentType
	// FetchTooLarge: a body over MaxPolicySize.
	FetchTooLarge
	// FetchInvalid: the body is not a valid policy.
	FetchInvalid
	numFetchErrorKinds
)

// NumFetchErrorKinds is the number of FetchErrorKind values, for arrays
// of counters indexed by kind.
const NumFetchErrorKinds = int(numFetchErrorKinds)

// String returns a short lower-case name: "network", "tls", "redirect",
// "status", "content_type", "too_large", "invalid".
func (k FetchErrorKind) String() string {
	switch k {
	case FetchNetwork:
		return "network"
	case FetchTLS:
		return "tls"
	case FetchRedirect:
		return "redirect"
	case FetchStatus:
		return "status"
	case FetchContentType:
		return "content_type"
	case FetchTooLarge:
		return "too_large"
	case FetchInvalid:
		return "invalid"
	}
	return fmt.Sprintf("FetchErrorKind(%d)", uint8(k))
}

// FetchError is a failed policy fetch.
type FetchError struct {
	// Kind says what failed.
	Kind FetchErrorKind
	// URL is the policy URL.
	URL string
	// Err is the underlying error.
	Err error
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("mta-sts: fetch %s: %s: %v", e.URL, e.Kind, e.Err)
}

func (e *FetchError) Unwrap() error { return e.Err }

// FetcherOptions configure a [Fetcher].
type FetcherOptions struct {
	// RootCAs verify the policy host's certificate. Nil means the
	// system's roots.
	RootCAs *x509.CertPool
	// DialContext opens the TCP connection to "mta-sts.<domain>:443";
	// nil means net.Dialer's (which resolves through the system
	// resolver). Package discovery passes a dialer that resolves through
	// its configured resolver.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds one whole fetch (connect, TLS, request, body).
	// Zero means 10 seconds.
	Timeout time.Duration
	// Port is the HTTPS port. Zero means 443; tests may set another.
	Port int
}

// Fetcher fetches policies over HTTPS as RFC 8461 §3.3 asks: TLS 1.2 or
// later with a certificate valid for "mta-sts.<domain>", no redirects
// followed, no HTTP cache, proxies from the environment ignored,
// Content-Type text/plain, at most 64 KiB. It is safe for concurrent use.
type Fetcher struct {
	client  *http.Client
	timeout time.Duration
	port    int
}

// NewFetcher returns a Fetcher.
func NewFetcher(o FetcherOptions) *Fetcher {
	dial := o.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 10 * time.Second}).DialContext
	}
	tr := &http.Transport{
		Proxy:       nil, // never an HTTP(S)_PROXY from the environment
		DialContext: dial,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    o.RootCAs,
		},
		// Each domain is its own host: keeping idle connections would only
		// hold sockets for hosts seen once a day.
		DisableKeepAlives:      true,
		ForceAttemptHTTP2:      false,
		TLSHandshakeTimeout:    10 * time.Second,
		ResponseHeaderTimeout:  10 * time.Second,
		MaxResponseHeaderBytes: 16 << 10,
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	port := o.Port
	if port == 0 {
		port = 443
	}
	return &Fetcher{
		client: &http.Client{
			Transport: tr,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
		timeout: timeout,
		port:    port,
	}
}

// URL returns the policy URL of domain:
// "https://mta-sts.<domain>/.well-known/mta-sts.txt".
func (f *Fetcher) URL(domain string) string {
	if f.port != 443 {
		return fmt.Sprintf("https://mta-sts.%s:%d/.well-known/mta-sts.txt", domain, f.port)
	}
	return "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
}

// Fetch fetches and parses the policy of domain (a bare domain name,
// lower case, no trailing dot). Every failure is a *FetchError.
func (f *Fetcher) Fetch(ctx context.Context, domain string) (*Policy, error) {
	url := f.URL(domain)
	fail := func(k FetchErrorKind, err error) (*Policy, error) {
		return nil, &FetchError{Kind: k, URL: url, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(FetchNetwork, err)
	}
	req.Header.Set("User-Agent", "tlsgate-mta-sts")
	resp, err := f.client.Do(req)
	if err != nil {
		return fail(classifyTransport(err), err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fail(FetchRedirect, fmt.Errorf("HTTP %s (Location %q), redirects are not followed", resp.Status, resp.Header.Get("Location")))
	case resp.StatusCode != http.StatusOK:
		return fail(FetchStatus, fmt.Errorf("HTTP %s", resp.Status))
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" {
		return fail(FetchContentType, fmt.Errorf("Content-Type %q, want text/plain", clip(ct)))
	}
	if resp.ContentLength > MaxPolicySize {
		return fail(FetchTooLarge, fmt.Errorf("Content-Length %d, more than %d", resp.ContentLength, MaxPolicySize))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxPolicySize+1))
	if err != nil {
		return fail(classifyTransport(err), fmt.Errorf("read body: %w", err))
	}
	if len(body) > MaxPolicySize {
		return fail(FetchTooLarge, fmt.Errorf("body larger than %d bytes", MaxPolicySize))
	}
	p, err := ParsePolicy(body)
	if err != nil {
		return fail(FetchInvalid, err)
	}
	return p, nil
}

// classifyTransport tells TLS failures from other transport failures.
func classifyTransport(err error) FetchErrorKind {
	var (
		certErr     *tls.CertificateVerificationError
		hostErr     x509.HostnameError
		unknownAuth x509.UnknownAuthorityError
		invalid     x509.CertificateInvalidError
		alert       tls.AlertError
		recordErr   tls.RecordHeaderError
		opErr       *net.OpError
	)
	switch {
	case errors.As(err, &certErr), errors.As(err, &hostErr), errors.As(err, &unknownAuth),
		errors.As(err, &invalid), errors.As(err, &alert), errors.As(err, &recordErr):
		return FetchTLS
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// An alert from the server ("remote error: tls: protocol version
		// not supported").
		return FetchTLS
	}
	return FetchNetwork
}
