package control

import (
	"context"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// FuzzControl sends arbitrary bytes as a request: the server answers one
// well-formed reply (OK or ERR, lines of printable text, an empty line)
// and closes the connection, whatever the bytes.
func FuzzControl(f *testing.F) {
	for _, s := range []string{"show example.com\n", "refresh a\r\n", "", "\n", "x\x00y\n", strings.Repeat("a", 3000), "purge \xff\xfe\n", "query a b c d\n"} {
		f.Add([]byte(s))
	}
	h := func(_ context.Context, cmd string, args []string) ([]string, error) {
		if cmd == "fail" {
			return nil, io.ErrUnexpectedEOF
		}
		return append([]string{cmd}, args...), nil
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		srv, cli := net.Pipe()
		done := make(chan struct{})
		go func() { serveConn(context.Background(), srv, h, nil); close(done) }()
		go func() { cli.Write(data); cli.Write([]byte("\n")) }()
		cli.SetDeadline(time.Now().Add(10 * time.Second))
		out, _ := io.ReadAll(cli)
		cli.Close()
		<-done
		s := string(out)
		if !strings.HasPrefix(s, "OK\n") && !strings.HasPrefix(s, "ERR ") {
			t.Fatalf("reply %q", s)
		}
		if !strings.HasSuffix(s, "\n\n") {
			t.Fatalf("reply %q does not end with an empty line", s)
		}
		for _, line := range strings.Split(strings.TrimSuffix(s, "\n\n"), "\n") {
			if line == "" || !utf8.ValidString(line) {
				t.Fatalf("line %q in %q", line, s)
			}
			for _, r := range line {
				if unicode.IsControl(r) {
					t.Fatalf("control character in line %q", line)
				}
			}
		}
	})
}
