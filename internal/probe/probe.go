// Package probe connects to a mail server the way our MTA would: SMTP
// greeting, EHLO, STARTTLS with our client certificate, and reports the
// TLS version, cipher, strength and the server's certificate chain,
// whether the chain verifies against our CA store and whether it names
// the host. It sends no mail: after the second EHLO it says QUIT.
//
// A domain is resolved to its MX hosts (lowest preference first; the
// domain itself when it has no MX record) through the system resolver.
package probe

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Target is what to probe.
type Target struct {
	// Domain is set for a domain target: its MX hosts are probed.
	Domain string
	// Host and Port are set for a "[HOST]:PORT" target; Port may also be
	// set for a domain (its MX hosts on that port, as a Postfix next hop
	// "domain:port" without brackets).
	Host string
	Port int
}

// String returns the target as given to ParseTarget.
func (t Target) String() string {
	if t.Domain != "" {
		return t.Domain
	}
	h := t.Host
	if strings.Contains(h, ":") {
		h = "IPv6:" + h
	}
	if t.Port == 25 {
		return "[" + h + "]"
	}
	return "[" + h + "]:" + strconv.Itoa(t.Port)
}

// ParseTarget reads "example.com" (probe its MX hosts), "[HOST]" or
// "[HOST]:PORT" (that host only; HOST a name, an IPv4 address or
// "IPv6:addr").
func ParseTarget(s string) (Target, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Target{}, fmt.Errorf("probe: empty target")
	}
	if !strings.HasPrefix(s, "[") {
		if strings.ContainsAny(s, ":[]/ ") {
			return Target{}, fmt.Errorf("probe: %q: give a domain (example.com) or [HOST]:PORT", s)
		}
		return Target{Domain: strings.TrimSuffix(strings.ToLower(s), ".")}, nil
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return Target{}, fmt.Errorf("probe: %q: missing ']'", s)
	}
	host := s[1:end]
	if len(host) > 5 && strings.EqualFold(host[:5], "ipv6:") {
		host = host[5:]
	}
	if host == "" {
		return Target{}, fmt.Errorf("probe: %q: empty host", s)
	}
	t := Target{Host: host, Port: 25}
	if rest := s[end+1:]; rest != "" {
		p, err := strconv.Atoi(strings.TrimPrefix(rest, ":"))
		if !strings.HasPrefix(rest, ":") || err != nil || p < 1 || p > 65535 {
			return Target{}, fmt.Errorf("probe: %q: %q after ']' is not :PORT", s, rest)
		}
		t.Port = p
	}
	return t, nil
}

// Options configure a probe.
type Options struct {
	// Helo is our EHLO name (default: the system's host name).
	Helo string
	// ClientCert is sent when the server asks for one (nil: none).
	ClientCert *tls.Certificate
	// Roots verify the server's chain (nil: not verified).
	Roots *x509.CertPool
	// Timeout limits each connection (default 30 s).
	Timeout time.Duration
	// Resolver resolves MX and host names (default net.DefaultResolver).
	Resolver *net.Resolver
	// MaxHosts limits the MX hosts probed (default 5).
	MaxHosts int
}

// Result is one server's probe.
type Result struct {
	// Host is the name (or address) connected to; Addr:Port where.
	Host string
	Addr string
	Port int
	// Pref is the MX preference (-1 for a host target).
	Pref int
	// Banner is the first line of the greeting.
	Banner string
	// Offered reports that EHLO listed STARTTLS.
	Offered bool
	// TLS facts after a completed handshake.
	TLS     bool
	Version string
	Cipher  string
	Bits    int
	// Chain is the server's certificate chain as sent, leaf first.
	Chain []*x509.Certificate
	// Verified reports that Chain verifies against Options.Roots
	// (VerifyErr says why not); NameOK that the leaf names Host
	// (NameErr says why not).
	Verified  bool
	VerifyErr string
	NameOK    bool
	NameErr   string
	// ClientCertSent reports that the server asked for, and got, our
	// client certificate.
	ClientCertSent bool
	// Err ends the probe early (connect, SMTP or handshake failure).
	Err error
}

// Probe probes t: each MX host of a domain (up to MaxHosts), or the one
// host. It fails only when a domain cannot be resolved.
func Probe(ctx context.Context, t Target, opts Options) ([]Result, error) {
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.MaxHosts <= 0 {
		opts.MaxHosts = 5
	}
	if t.Domain == "" {
		r := ProbeHost(ctx, t.Host, t.Port, opts)
		r.Pref = -1
		return []Result{r}, nil
	}
	mxs, err := opts.Resolver.LookupMX(ctx, t.Domain)
	hosts := []*net.MX{}
	if err == nil {
		hosts = mxs
	} else if dnsErr, ok := err.(*net.DNSError); ok && dnsErr.IsNotFound {
		// RFC 5321 5.1: no MX record, the domain itself is the host.
		hosts = []*net.MX{{Host: t.Domain, Pref: 0}}
	} else {
		return nil, fmt.Errorf("probe: MX lookup for %s: %w", t.Domain, err)
	}
	if len(hosts) == 1 && hosts[0].Host == "." {
		return nil, fmt.Errorf("probe: %s has a null MX: it accepts no mail", t.Domain)
	}
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Pref < hosts[j].Pref })
	var out []Result
	for i, mx := range hosts {
		if i >= opts.MaxHosts {
			break
		}
		port := t.Port
		if port == 0 {
			port = 25
		}
		r := ProbeHost(ctx, strings.TrimSuffix(mx.Host, "."), port, opts)
		r.Pref = int(mx.Pref)
		out = append(out, r)
	}
	return out, nil
}

// ProbeHost probes one host and port.
func ProbeHost(ctx context.Context, host string, port int, opts Options) Result {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Helo == "" {
		opts.Helo = heloName()
	}
	r := Result{Host: host, Port: port}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	d := net.Dialer{Resolver: opts.Resolver}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		r.Err = fmt.Errorf("connect: %w", err)
		return r
	}
	defer conn.Close()
	r.Addr = conn.RemoteAddr().(*net.TCPAddr).IP.String()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	c := &smtpConn{r: bufio.NewReader(conn), w: conn}
	code, lines, err := c.reply()
	if err != nil || code != 220 {
		r.Err = replyErr("greeting", code, lines, err)
		return r
	}
	r.Banner = lines[0]
	ext, err := c.ehlo(opts.Helo)
	if err != nil {
		r.Err = err
		return r
	}
	for _, e := range ext {
		if strings.EqualFold(strings.Fields(e + " x")[0], "STARTTLS") {
			r.Offered = true
		}
	}
	if !r.Offered {
		c.cmd("QUIT")
		return r
	}
	if code, lines, err := c.cmd("STARTTLS"); err != nil || code != 220 {
		r.Err = replyErr("STARTTLS", code, lines, err)
		return r
	}
	cfg := &tls.Config{
		// The chain is verified below, against our store, as the MTA
		// would: a failure is a finding, not a reason to stop.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS10,
	}
	if net.ParseIP(host) == nil {
		cfg.ServerName = host
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if opts.ClientCert == nil {
			return &tls.Certificate{}, nil
		}
		r.ClientCertSent = true
		return opts.ClientCert, nil
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		r.Err = fmt.Errorf("TLS handshake: %w", err)
		return r
	}
	st := tc.ConnectionState()
	r.TLS = true
	r.Version = versionName(st.Version)
	r.Cipher = tls.CipherSuiteName(st.CipherSuite)
	r.Bits = cipherBits(r.Cipher)
	r.Chain = st.PeerCertificates
	if len(r.Chain) > 0 {
		leaf := r.Chain[0]
		if opts.Roots != nil {
			inter := x509.NewCertPool()
			for _, c := range r.Chain[1:] {
				inter.AddCert(c)
			}
			_, err := leaf.Verify(x509.VerifyOptions{Roots: opts.Roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			r.Verified = err == nil
			if err != nil {
				r.VerifyErr = err.Error()
			}
		} else {
			r.VerifyErr = "no CA store configured"
		}
		if err := leaf.VerifyHostname(host); err != nil {
			r.NameErr = err.Error()
		} else {
			r.NameOK = true
		}
	}
	tc.SetDeadline(deadline)
	c = &smtpConn{r: bufio.NewReader(tc), w: tc}
	if _, err := c.ehlo(opts.Helo); err == nil {
		c.cmd("QUIT")
	}
	return r
}

// heloName is the system's host name when it is fully qualified (no
// lookup is made to qualify it), else "localhost".
func heloName() string {
	if name, err := os.Hostname(); err == nil && strings.Contains(name, ".") {
		return name
	}
	return "localhost"
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLSv1"
	case tls.VersionTLS11:
		return "TLSv1.1"
	case tls.VersionTLS12:
		return "TLSv1.2"
	case tls.VersionTLS13:
		return "TLSv1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

// cipherBits is the symmetric strength of a cipher suite, as OpenSSL
// reports it ("256/256 bits").
func cipherBits(name string) int {
	switch {
	case strings.Contains(name, "AES_256"), strings.Contains(name, "CHACHA20"):
		return 256
	case strings.Contains(name, "AES_128"), strings.Contains(name, "RC4_128"):
		return 128
	case strings.Contains(name, "3DES"):
		return 112
	}
	return 0
}

type smtpConn struct {
	r *bufio.Reader
	w net.Conn
}

// reply reads one (multi-line) SMTP reply; lines are without the code.
func (c *smtpConn) reply() (int, []string, error) {
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return 0, lines, err
		}
		l = strings.TrimRight(l, "\r\n")
		if len(l) < 3 || len(lines) > 100 {
			return 0, lines, fmt.Errorf("malformed reply %q", Escape(l))
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil {
			return 0, lines, fmt.Errorf("malformed reply %q", Escape(l))
		}
		text := ""
		if len(l) > 4 {
			text = l[4:]
		}
		lines = append(lines, text)
		if len(l) == 3 || l[3] == ' ' {
			return code, lines, nil
		}
	}
}

func (c *smtpConn) cmd(s string) (int, []string, error) {
	if _, err := fmt.Fprintf(c.w, "%s\r\n", s); err != nil {
		return 0, nil, err
	}
	return c.reply()
}

func (c *smtpConn) ehlo(name string) ([]string, error) {
	code, lines, err := c.cmd("EHLO " + name)
	if err != nil || code != 250 {
		return nil, replyErr("EHLO", code, lines, err)
	}
	return lines[1:], nil
}

func replyErr(what string, code int, lines []string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: server answered %d %s", what, code, Escape(strings.Join(lines, " / ")))
}

// Escape makes a string from a certificate or server safe to print: C0
// and C1 control characters, DEL, Unicode bidirectional controls
// (overrides, embeddings, isolates, marks) and invalid UTF-8 are written
// as \xNN or \u{XXXX}, and the backslash as \\.
func Escape(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || r == '\\' || unsafeRune(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02X`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case unsafeRune(r):
			if r < 0x100 {
				fmt.Fprintf(&b, `\x%02X`, r)
			} else {
				fmt.Fprintf(&b, `\u{%04X}`, r)
			}
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0xfeff, r == 0x2028, r == 0x2029:
		return true
	}
	return false
}
