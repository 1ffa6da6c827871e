// Package control is the local control socket of the running daemon: a
// unix socket of mode 0600 (only the daemon's user and root may connect),
// never the MTA's socket, over which `tlsgate discovery show|refresh|purge
// DOMAIN` and `tlsgate query outbound` act on the running daemon.
//
// The protocol is one line per connection each way and back: the client
// sends a command and its arguments separated by spaces ("show
// example.com\n"); the server answers "OK" or "ERR <message>" on the first
// line, then the lines of the result, then an empty line, and closes the
// connection. Lines are UTF-8 without control characters (the server
// replaces them), a request is at most MaxRequest bytes.
package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/tlsgate/tlsgate/internal/listen"
)

// Limits of the protocol.
const (
	// MaxRequest bounds a request line, in bytes.
	MaxRequest = 1024
	// maxConns bounds the connections served at once; more wait in the
	// listen backlog.
	maxConns = 8
)

// requestTimeout bounds reading a request; Timeout the whole exchange.
var requestTimeout = 5 * time.Second

// Timeout bounds one command (a refresh waits for DNS and HTTPS).
const Timeout = 60 * time.Second

// Handler runs one command: cmd is the first word of the request, args
// the others. It returns the result's lines, or an error whose text the
// client prints.
type Handler func(ctx context.Context, cmd string, args []string) ([]string, error)

// Serve accepts connections on ln and answers each with h until ctx is
// done (then it closes ln and waits for the commands in flight). It
// returns nil after ctx is done, else the listener's error.
func Serve(ctx context.Context, ln net.Listener, h Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	slots := make(chan struct{}, maxConns)
	for {
		c, err := listen.Accept(ln, func(err error, retryIn time.Duration) {
			log.Warn("control: accept failed, retrying", "error", err.Error(), "retry_in", retryIn)
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("control: accept on %s: %w", ln.Addr(), err)
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			c.Close()
			return nil
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			serveConn(ctx, c, h, log)
		}()
	}
}

func serveConn(ctx context.Context, c net.Conn, h Handler, log *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(requestTimeout))
	line, err := readLine(bufio.NewReaderSize(c, 256))
	if err != nil {
		c.SetWriteDeadline(time.Now().Add(time.Second))
		writeReply(c, nil, err)
		return
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		writeReply(c, nil, errors.New("empty request"))
		return
	}
	c.SetDeadline(time.Now().Add(Timeout))
	cctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	lines, err := h(cctx, f[0], f[1:])
	if err != nil {
		log.Debug("control", "command", f[0], "error", err.Error())
	}
	writeReply(c, lines, err)
}

// readLine reads one line of at most MaxRequest bytes without its end.
func readLine(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		chunk, err := br.ReadSlice('\n')
		if b.Len()+len(chunk) > MaxRequest+1 {
			return "", fmt.Errorf("request longer than %d bytes", MaxRequest)
		}
		b.Write(chunk)
		switch {
		case err == nil:
			return strings.TrimRight(b.String(), "\r\n"), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && b.Len() > 0:
			return b.String(), nil
		}
		return "", err
	}
}

func writeReply(w io.Writer, lines []string, err error) {
	var b strings.Builder
	if err != nil {
		b.WriteString("ERR " + clean(err.Error()) + "\n")
	} else {
		b.WriteString("OK\n")
		for _, l := range lines {
			b.WriteString(clean(l) + "\n")
		}
	}
	b.WriteString("\n")
	io.WriteString(w, b.String())
}

// clean makes s one line of printable text.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == unicode.ReplacementChar || unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// Ask connects to the control socket at path, sends cmd with args and
// returns the result's lines; an ERR answer is returned as an error.
func Ask(ctx context.Context, path, cmd string, args ...string) ([]string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w (is tlsgate serve running with [discovery]?)", path, err)
	}
	defer c.Close()
	dl := time.Now().Add(Timeout + requestTimeout)
	if t, ok := ctx.Deadline(); ok && t.Before(dl) {
		dl = t
	}
	c.SetDeadline(dl)
	for _, a := range append([]string{cmd}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\r\n") {
			return nil, fmt.Errorf("control: argument %q is empty or contains blanks", a)
		}
	}
	if _, err := io.WriteString(c, strings.Join(append([]string{cmd}, args...), " ")+"\n"); err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("control socket %s: reading the answer: %w", path, err)
	}
	status = strings.TrimRight(status, "\n")
	if msg, ok := strings.CutPrefix(status, "ERR "); ok {
		return nil, errors.New(msg)
	}
	if status != "OK" {
		return nil, fmt.Errorf("control socket %s: unexpected answer %q", path, status)
	}
	var lines []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("control socket %s: answer cut short: %w", path, err)
		}
		l = strings.TrimRight(l, "\n")
		if l == "" {
			return lines, nil
		}
		lines = append(lines, l)
	}
}
