package install

import (
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// syslogd stands in for the system's syslog daemon, which the throwaway
// system does not run: it serves /dev/log inside the system and appends
// every message, without its <PRI> prefix, as a line to path (in the
// system), where waitLog finds it. Sendmail logs only through syslog(3).
type syslogd struct {
	conn *net.UnixConn
	mu   sync.Mutex
	f    *os.File
}

var syslogPri = regexp.MustCompile(`^<\d+>`)

func startSyslog(t *testing.T, sys *system, path string) *syslogd {
	t.Helper()
	sock := sys.Path("/dev/log")
	os.Remove(sock)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatalf("syslog: listen on the system's /dev/log: %v", err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(sys.Path(path), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	d := &syslogd{conn: conn, f: f}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64*1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			line := syslogPri.ReplaceAllString(strings.TrimRight(string(buf[:n]), "\n\x00"), "")
			d.mu.Lock()
			d.f.WriteString(line + "\n")
			d.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
		f.Close()
	})
	return d
}
