package listen

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// Retry delays after a temporary Accept error: the first, and the most.
const (
	firstRetry = 5 * time.Millisecond
	maxRetry   = time.Second
)

// Accept returns l's next connection. Errors that may pass if retried (out
// of file descriptors or buffers, a connection aborted before it was
// accepted, a timeout) are retried after 5 ms, doubling up to 1 s, and
// reported to warn (if not nil) each time, so that running out of
// descriptors delays a server instead of ending it. Other errors, such as
// net.ErrClosed after the listener was closed, are returned.
func Accept(l net.Listener, warn func(err error, retryIn time.Duration)) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err == nil {
			return c, nil
		}
		if !TemporaryError(err) {
			return nil, err
		}
		delay = min(max(2*delay, firstRetry), maxRetry)
		if warn != nil {
			warn(err, delay)
		}
		time.Sleep(delay)
	}
}

// TemporaryError reports whether Accept may succeed if retried after err.
func TemporaryError(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
