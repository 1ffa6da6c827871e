package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/tlsgate/tlsgate/policyd"
)

// NoopReply parses a fixed socketmap answer for the no-op servers: "NOTFOUND"
// (or "NOTFOUND "), or "OK data".
func NoopReply(s string) (policyd.Reply, error) {
	s = strings.TrimSpace(s)
	if s == "NOTFOUND" {
		return policyd.Reply{Status: policyd.StatusNotFound}, nil
	}
	if data, ok := strings.CutPrefix(s, "OK "); ok && strings.TrimSpace(data) != "" {
		return policyd.Reply{Status: policyd.StatusOK, Data: data}, nil
	}
	return policyd.Reply{}, fmt.Errorf("bench: no-op reply %q: want NOTFOUND or \"OK data\"", s)
}

// ServeRawSocketmap is the floor a socketmap server is compared with: a bare
// loop per connection that reads a netstring with policyd.ReadNetstring and
// writes the fixed reply, with no limits, deadlines, bookkeeping or model. It
// returns when l is closed.
func ServeRawSocketmap(l net.Listener, r policyd.Reply) error {
	payload := r.String()
	reply := policyd.AppendNetstring(nil, []byte(payload))
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				if _, err := policyd.ReadNetstring(br, policyd.DefaultMaxRequest); err != nil {
					return
				}
				if _, err := c.Write(reply); err != nil {
					return
				}
			}
		}()
	}
}

// NewNoopSocketmapServer returns policyd's SocketmapServer with a Lookuper
// that answers r to every request and logs nothing: tlsgate's own server
// framework without the policy model and its log lines.
func NewNoopSocketmapServer(r policyd.Reply) (*policyd.SocketmapServer, error) {
	lk := policyd.LookupFunc(func(context.Context, string, string) policyd.Reply { return r })
	return policyd.NewSocketmapServer(policyd.SocketmapOptions{
		Lookuper: lk,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

// SocketmapStepper is a socketmap load client: one persistent connection,
// one request at a time, waiting for each reply as Postfix's smtp(8) does.
// It cycles through its keys.
type SocketmapStepper struct {
	spec, mapName string
	keys          []string
	next          int
	c             *policyd.SocketmapClient
}

// NewSocketmapStepper dials spec ("unix:/path" or "inet:host:port") and
// returns a stepper asking map mapName for keys, starting at keys[start].
func NewSocketmapStepper(spec, mapName string, keys []string, start int) (*SocketmapStepper, error) {
	if len(keys) == 0 {
		return nil, errors.New("bench: socketmap stepper without keys")
	}
	s := &SocketmapStepper{spec: spec, mapName: mapName, keys: keys, next: start % len(keys)}
	return s, s.dial()
}

func (s *SocketmapStepper) dial() error {
	c, err := policyd.DialSocketmap(context.Background(), s.spec)
	if err != nil {
		return err
	}
	s.c = c
	return nil
}

// Step sends one lookup and returns the reply's status word.
func (s *SocketmapStepper) Step() (string, error) {
	if s.c == nil {
		if err := s.dial(); err != nil {
			return "", err
		}
	}
	k := s.keys[s.next]
	s.next++
	if s.next == len(s.keys) {
		s.next = 0
	}
	r, err := s.c.Lookup(context.Background(), s.mapName, k)
	if err != nil {
		s.c.Close()
		s.c = nil
		return "", err
	}
	return r.Status.String(), nil
}

// Close closes the connection.
func (s *SocketmapStepper) Close() error {
	if s.c == nil {
		return nil
	}
	return s.c.Close()
}
