package bench

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/discovery"
)

// TestDiscoveryCacheFile: the cache file part 5 writes is one tlsgate's
// discovery loads, with the answers the benchmark counts on, all fresh.
func TestDiscoveryCacheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.cache")
	names, err := writeDiscoveryCache(path, 30, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	d, err := discovery.New(discovery.Config{MTASTS: true, DANE: true, Resolver: "127.0.0.1:9", CacheFile: path})
	if err != nil {
		t.Fatal(err)
	}
	if n := d.Stats().Entries; n != 30 {
		t.Fatalf("%d entries loaded, want 30", n)
	}
	want := map[int]string{0: "dane", 1: "secure match=mx1.c1.example:.c1.example servername=hostname", 2: ""}
	for i, w := range want {
		info, ok, err := d.Show(names[i])
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", names[i], ok, err)
		}
		if info.Result.Postfix.Text != w || info.Result.Cache != discovery.CacheHit {
			t.Errorf("%s: %+v, want %q from the cache", names[i], info.Result, w)
		}
	}
}
