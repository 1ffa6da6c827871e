package mailq

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestParseCaptured reads the listings captured from the real lab.
func TestParseCaptured(t *testing.T) {
	f, err := os.Open("testdata/postqueue.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pq, err := ParsePostqueueJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := os.Open("testdata/sendmail-mailq.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	sm, err := ParseMailq(g, time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	for name, q := range map[string][]Message{"postqueue -j": pq, "mailq": sm} {
		if len(q) != 3 {
			t.Fatalf("%s: %d messages, want 3: %+v", name, len(q), q)
		}
		var rcpts []string
		for _, m := range q {
			if m.Sender != "sender@lab.test" || m.ID == "" || m.Size == 0 || m.Arrival.IsZero() || len(m.Recipients) != 1 {
				t.Errorf("%s: %+v", name, m)
				continue
			}
			r := m.Recipients[0]
			if !strings.Contains(r.Reason, "451 4.3.0 try again later") {
				t.Errorf("%s: reason %q", name, r.Reason)
			}
			rcpts = append(rcpts, r.Address+" "+r.Domain())
		}
		if want := []string{"a@held.test held.test", "b@held.test held.test", "c@other.test other.test"}; !reflect.DeepEqual(rcpts, want) {
			t.Errorf("%s: recipients %q, want %q", name, rcpts, want)
		}
		if name == "postqueue -j" && q[0].Queue != "deferred" {
			t.Errorf("queue %q", q[0].Queue)
		}
		if name == "mailq" && (q[0].Arrival.Year() != 2026 || q[0].Arrival.Month() != 12) {
			t.Errorf("mailq arrival %v", q[0].Arrival)
		}
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := ParsePostqueueJSON(strings.NewReader("{\"queue_id\":\"A\"}\nnot json\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad line: %v", err)
	}
	q, err := ParseMailq(strings.NewReader("Mail queue is empty\n"), time.Now())
	if err != nil || len(q) != 0 {
		t.Errorf("empty queue: %v %v", q, err)
	}
}

// TestSourceTimeout: a listing command that hangs is cut off.
func TestSourceTimeout(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "postqueue")
	os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755)
	s := Postfix(script, "")
	s.Timeout = 200 * time.Millisecond
	start := time.Now()
	_, err := s.Read(context.Background(), time.Now())
	if err == nil || !strings.Contains(err.Error(), "no answer within") || time.Since(start) > 10*time.Second {
		t.Errorf("hanging postqueue: %v after %v", err, time.Since(start))
	}
}
