package posture

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// benchLog is the captured Postfix log repeated copies times, each copy an
// hour after the one before (so the join state is swept as in a long log).
func benchLog(tb testing.TB, copies int) ([]byte, int) {
	tb.Helper()
	data, err := os.ReadFile("testdata/lab/postfix.log")
	if err != nil {
		tb.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	var b bytes.Buffer
	n := 0
	base := time.Date(0, 11, 1, 0, 0, 0, 0, time.UTC)
	for c := 0; c < copies; c++ {
		ts := base.Add(time.Duration(c) * time.Hour).Format(time.Stamp)
		for _, l := range lines {
			if len(l) < 16 {
				continue
			}
			b.WriteString(ts)
			b.WriteString(l[15:])
			n++
		}
	}
	return b.Bytes(), n
}

// BenchmarkCollect measures the reader, the join and the aggregation on
// one core, with the lab policy judging covered peers; it reports lines/s.
func BenchmarkCollect(b *testing.B) {
	data, n := benchLog(b, 300)
	model := labModel(b)
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c := New(Options{Model: model, Now: now})
		if err := c.Read("bench.log", bytes.NewReader(data), now); err != nil {
			b.Fatal(err)
		}
		c.Report()
	}
	b.ReportMetric(float64(n)*float64(b.N)/time.Since(start).Seconds(), "lines/s")
}

// peerLines writes one outbound delivery with TLS and one inbound session
// for each of n peers; the queue IDs are those of pass (a log's later
// days have new ones).
func peerLines(w io.Writer, n, pass int) {
	for i := 0; i < n; i++ {
		q := i + pass<<20 // the queue IDs' number
		pid := 1000 + i%30000
		fmt.Fprintf(w, "Dec  7 10:%02d:%02d mx postfix/smtp[%d]: Trusted TLS connection established to mx.p%d.example[10.%d.%d.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n", i/60%60, i%60, pid, i, i/256%256, i%256)
		fmt.Fprintf(w, "Dec  7 10:%02d:%02d mx postfix/smtp[%d]: A%09X: to=<u@p%d.example>, relay=mx.p%d.example[10.%d.%d.1]:25, delay=0.1, delays=0/0/0/0, dsn=2.0.0, status=sent (250 ok)\n", i/60%60, i%60, pid, q, i, i, i/256%256, i%256)
		fmt.Fprintf(w, "Dec  7 10:%02d:%02d mx postfix/smtpd[%d]: connect from mx.p%d.example[10.%d.%d.2]\n", i/60%60, i%60, pid+1, i, i/256%256, i%256)
		fmt.Fprintf(w, "Dec  7 10:%02d:%02d mx postfix/smtpd[%d]: Anonymous TLS connection established from mx.p%d.example[10.%d.%d.2]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)\n", i/60%60, i%60, pid+1, i, i/256%256, i%256)
		fmt.Fprintf(w, "Dec  7 10:%02d:%02d mx postfix/smtpd[%d]: B%09X: client=mx.p%d.example[10.%d.%d.2]\n", i/60%60, i%60, pid+1, q, i, i/256%256, i%256)
		fmt.Fprintf(w, "Dec  7 10:%02d:%02d mx postfix/qmgr[9]: B%09X: from=<a@p%d.example>, size=1, nrcpt=1 (queue active)\n", i/60%60, i%60, q, i)
		fmt.Fprintf(w, "Dec  7 10:%02d:%02d mx postfix/qmgr[9]: B%09X: removed\n", i/60%60, i%60, q)
		fmt.Fprintf(w, "Dec  7 10:%02d:%02d mx postfix/smtpd[%d]: disconnect from mx.p%d.example[10.%d.%d.2] ehlo=2 starttls=1 mail=1 quit=1 commands=5\n", i/60%60, i%60, pid+1, i, i/256%256, i%256)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMemoryBoundedByPeers: reading the same peers' sessions ten times
// over, each time with new queue IDs as a log's later hours have, keeps
// the collector's memory where one reading left it (it grows with peers,
// not lines), and each peer costs a bounded amount. The figure is logged.
func TestMemoryBoundedByPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("memory measurement")
	}
	now := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	passes := make([][]byte, 10)
	for i := range passes {
		var b bytes.Buffer
		peerLines(&b, 5000, i)
		passes[i] = b.Bytes()
	}
	// The same peers again and again: ten times the lines, no new peers.
	measure := func(copies int) uint64 {
		before := heapInUse()
		c := New(Options{Model: labModel(t), Now: now})
		for i := 0; i < copies; i++ {
			if err := c.Read("peers.log", bytes.NewReader(passes[i]), now); err != nil {
				t.Fatal(err)
			}
		}
		after := heapInUse()
		runtime.KeepAlive(c)
		runtime.KeepAlive(passes) // in before and after alike
		return after - min(after, before)
	}
	one, ten := measure(1), measure(10)
	// Four peers per generated partner: outbound domain and MX, inbound
	// client and sender domain.
	perPeer := float64(one) / (4 * 5000)
	t.Logf("collector heap: %d KB after 1 pass, %d KB after 10 passes (40,000 vs 400,000 lines); %.0f bytes per peer", one/1024, ten/1024, perPeer)
	if float64(ten) > 1.03*float64(one) {
		t.Errorf("memory grows with lines: %d bytes after 1 pass, %d after 10 over the same peers", one, ten)
	}
	if perPeer > 4096 {
		t.Errorf("%.0f bytes per peer, want under 4 KB", perPeer)
	}
}
