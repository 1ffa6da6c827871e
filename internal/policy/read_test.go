package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestHalfWrittenFile: while a writer rewrites a file in place as an
// editor or cp does (truncate, write part, pause, write the rest), every
// Load either gets the whole file or refuses it: never the endpoints of
// a file cut short. The writer pauses now and then, so that loads get
// the whole file; loads must have seen it change (and read it again).
func TestHalfWrittenFile(t *testing.T) {
	const n = 300
	var b strings.Builder
	b.WriteString("mta = \"postfix\"\n")
	for i := range n {
		b.WriteString(ep(fmt.Sprintf("e%d", i), fmt.Sprintf("h%d.example", i)))
	}
	full := []byte(b.String())
	path := filepath.Join(t.TempDir(), "tlsgate.toml")
	if err := os.WriteFile(path, full, 0o644); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var writes atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cut := len(full) / 3 * (1 + i%2)
			f.Truncate(0)
			f.WriteAt(full[:cut], 0)
			time.Sleep(time.Duration(1+i%3) * time.Millisecond)
			f.WriteAt(full[cut:], int64(cut))
			writes.Add(1)
			time.Sleep(time.Duration(i%4) * time.Millisecond)
			if i%50 == 49 {
				time.Sleep(200 * time.Millisecond) // a quiet moment
			}
		}
	})
	var ok, refused, rereads int
	deadline := time.Now().Add(2 * time.Second)
	kept := NewLoader(path) // as the daemon's, which knows the last read
	for k := 0; time.Now().Before(deadline); k++ {
		l := kept
		if k%2 == 1 {
			l = NewLoader(path) // as check's
		}
		p, err := l.Load()
		rereads += l.Stats().Rereads
		switch {
		case err == nil && len(p.Endpoints) == n:
			ok++
		case err == nil:
			t.Errorf("a file cut short was loaded: %d of %d endpoints", len(p.Endpoints), n)
		case strings.Contains(err.Error(), "changed while it was being read"):
			refused++
		default:
			t.Errorf("Load: %v", err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d writes; %d loads whole, %d refused; the file was read again %d times", writes.Load(), ok, refused, rereads)
	if writes.Load() < 100 || ok == 0 || rereads == 0 {
		t.Errorf("%d writes, %d loads whole, %d rereads: want loads that saw writes, and loads that got the file", writes.Load(), ok, rereads)
	}
	// Once the writer stops, the file loads.
	if p, err := Load(path); err != nil || len(p.Endpoints) != n {
		t.Errorf("after the writes: %v", err)
	}
}

// TestReadReplacedFile: a file replaced by rename while it is read is
// read again, and one whole version is loaded.
func TestReadReplacedFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tlsgate.toml")
	write(t, path, "mta = \"postfix\"\n"+ep("old", "old.example"))
	for i := range 50 {
		done := make(chan error)
		go func() {
			tmp := filepath.Join(dir, fmt.Sprintf("new%d", i))
			err := os.WriteFile(tmp, []byte("mta = \"postfix\"\n"+ep(fmt.Sprintf("new%d", i), "new.example")), 0o644)
			if err == nil {
				err = os.Rename(tmp, path)
			}
			done <- err
		}()
		p, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Endpoints) != 1 {
			t.Fatalf("%d endpoints", len(p.Endpoints))
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
