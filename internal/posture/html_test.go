package posture

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// requireChromium returns Debian's chromium, skipping the test without it
// (or failing it when CI=true: scripts/install-test-deps.sh installs it).
func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "chromium not found; install with: sudo scripts/install-test-deps.sh (from the repository root)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func hexRGB(hex string) string {
	var r, g, b int
	fmt.Sscanf(hex, "#%02x%02x%02x", &r, &g, &b)
	return fmt.Sprintf("rgb(%d, %d, %d)", r, g, b)
}

// browser is a headless Chromium with collectors of the page's network
// requests (other than the page itself) and of console errors,
// exceptions and error log entries.
type browser struct {
	ctx      context.Context
	mu       sync.Mutex
	url      string
	requests []string
	problems []string
	stop     func()
	wg       sync.WaitGroup
}

func startBrowser(t *testing.T, bin, dir string) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.WindowSize(1600, 1100),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelA() })
	// Start the browser on the context without a deadline (a deadline on
	// the first run would bound the browser's life), then bound the test.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(90*time.Second, cancel)
	t.Cleanup(func() { watchdog.Stop() })
	b := &browser{ctx: ctx}
	evctx, stop := context.WithCancel(ctx)
	b.stop = stop
	add := func(list *[]string, s string) {
		b.mu.Lock()
		*list = append(*list, s)
		b.mu.Unlock()
	}
	collect := func(f func()) {
		b.wg.Add(1)
		go func() { defer b.wg.Done(); f() }()
	}
	collect(func() {
		for ev, err := range chromedp.Events(evctx, network.RequestWillBeSent) {
			if err != nil {
				return
			}
			b.mu.Lock()
			self := ev.Request.URL == b.url
			b.mu.Unlock()
			if !self {
				add(&b.requests, ev.Request.URL)
			}
		}
	})
	collect(func() {
		for ev, err := range chromedp.Events(evctx, runtime.ConsoleAPICalled) {
			if err != nil {
				return
			}
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				add(&b.problems, "console."+string(ev.Type))
			}
		}
	})
	collect(func() {
		for ev, err := range chromedp.Events(evctx, runtime.ExceptionThrown) {
			if err != nil {
				return
			}
			add(&b.problems, "exception: "+ev.ExceptionDetails.Text)
		}
	})
	collect(func() {
		for ev, err := range chromedp.Events(evctx, log.EntryAdded) {
			if err != nil {
				return
			}
			if ev.Entry.Level == log.EntryLevelError {
				add(&b.problems, "log: "+ev.Entry.Text)
			}
		}
	})
	return b
}

// open loads a file and waits until sel is visible.
func (b *browser) open(t *testing.T, path, sel string) {
	t.Helper()
	b.mu.Lock()
	b.url = "file://" + path
	b.mu.Unlock()
	if err := chromedp.Do(b.ctx, chromedp.Navigate(b.url), chromedp.WaitVisible(sel)); err != nil {
		t.Fatal(err)
	}
}

// finish waits until the events sent before a last round trip to the page
// are collected, and returns them.
func (b *browser) finish(t *testing.T) (requests, problems []string) {
	t.Helper()
	// The browser sends events in order on one connection: a marker
	// logged now arrives after every earlier event.
	marker := fmt.Sprintf("posture-test-end-%d", time.Now().UnixNano())
	done := make(chan struct{})
	go func() {
		for ev, err := range chromedp.Events(b.ctx, runtime.ConsoleAPICalled) {
			if err != nil {
				break
			}
			if len(ev.Args) > 0 && strings.Contains(string(ev.Args[0].Value), marker) {
				break
			}
		}
		close(done)
	}()
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[chromedp.Void](`console.log("`+marker+`")`)); err != nil {
		t.Fatal(err)
	}
	<-done
	b.stop()
	b.wg.Wait()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.requests, b.problems
}

// TestBrowserCollectors: the collectors of TestHTMLInChromium see a page
// that fetches something or logs an error (so that their silence on the
// report page means something).
func TestBrowserCollectors(t *testing.T) {
	bin := requireChromium(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "bad.html")
	os.WriteFile(page, []byte(`<!DOCTYPE html><html><body><p id="x">x</p><img src="http://127.0.0.1:9/x.png"><script>console.error("bad")</script></body></html>`), 0o644)
	b := startBrowser(t, bin, dir)
	b.open(t, page, "#x")
	requests, problems := b.finish(t)
	if len(requests) == 0 || len(problems) == 0 {
		t.Errorf("control page: requests %q problems %q, want both seen", requests, problems)
	}
}

// TestHTMLInChromium opens the posture page in headless Chromium: it must
// load without a network request or a console error, show one row per
// peer, sort on a click and colour each timeline segment by its trust
// level. The captured Postfix log is spread over 20 days so that the
// timelines have days to show. The screenshot is kept in the test's
// directory (POSTURE_SCREENSHOT=FILE copies it there).
func TestHTMLInChromium(t *testing.T) {
	bin := requireChromium(t)
	data, err := os.ReadFile("testdata/lab/postfix.log")
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(data, []byte("\n"))
	spread := retime(t, data, time.Date(0, 11, 18, 8, 0, 0, 0, time.UTC), 20*24*time.Hour/time.Duration(lines))
	c := New(Options{Model: labModel(t), Now: fixtureNow, MinSessions: 20, MinDays: 14})
	if err := c.Read("spread.log", bytes.NewReader(spread), fixtureNow); err != nil {
		t.Fatal(err)
	}
	if err := c.ReadFile("testdata/lab/sendmail.log", nil); err != nil {
		t.Fatal(err)
	}
	r := c.Report()
	dir := t.TempDir()
	page := filepath.Join(dir, "posture.html")
	f, err := os.Create(page)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	b := startBrowser(t, bin, dir)
	ctx := b.ctx
	b.open(t, page, "#peers")
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#peers tbody tr").length`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shotPath := filepath.Join(dir, "posture.png")
	os.WriteFile(shotPath, shot, 0o644)
	if p := os.Getenv("POSTURE_SCREENSHOT"); p != "" {
		os.WriteFile(p, shot, 0o644)
	}
	if len(shot) < 10000 {
		t.Errorf("screenshot is %d bytes: an empty page?", len(shot))
	}
	if rows != len(r.Peers) {
		t.Errorf("%d table rows, want one per peer (%d)", rows, len(r.Peers))
	}

	// Sorting: Sessions ascending, then descending; Peer alphabetically.
	column := func(i int) []string {
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fmt.Sprintf(`Array.from(document.querySelectorAll("#peers tbody tr")).map(r => r.cells[%d].textContent)`, i)))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	click := func(i int) {
		if err := chromedp.Do(ctx, chromedp.Click(fmt.Sprintf("#peers thead th:nth-child(%d)", i+1))); err != nil {
			t.Fatal(err)
		}
	}
	nums := func(v []string) []int {
		out := make([]int, len(v))
		for i, s := range v {
			out[i], _ = strconv.Atoi(strings.TrimSpace(s))
		}
		return out
	}
	click(3)
	asc := nums(column(3))
	if !sort.IntsAreSorted(asc) || len(asc) != len(r.Peers) {
		t.Errorf("after one click on Sessions: %v, want ascending", asc)
	}
	click(3)
	desc := nums(column(3))
	if !sort.SliceIsSorted(desc, func(i, j int) bool { return desc[i] > desc[j] }) || desc[0] == desc[len(desc)-1] {
		t.Errorf("after two clicks on Sessions: %v, want descending", desc)
	}
	click(2)
	peers := column(2)
	lower := make([]string, len(peers))
	for i, p := range peers {
		lower[i] = strings.ToLower(p)
	}
	if !sort.StringsAreSorted(lower) {
		t.Errorf("after a click on Peer: %v", peers)
	}

	// Timeline colours: every segment's computed colour is its level's.
	type seg struct {
		Level string `json:"level"`
		Color string `json:"color"`
	}
	segs, err := chromedp.Run(ctx, chromedp.Evaluate[[]seg](`Array.from(document.querySelectorAll(".seg")).map(e => ({level: e.dataset.level, color: getComputedStyle(e).backgroundColor}))`))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range segs {
		seen[s.Level] = true
		if want := hexRGB(LevelColors[s.Level]); s.Color != want {
			t.Errorf("segment %s coloured %s, want %s", s.Level, s.Color, want)
		}
	}
	for _, lv := range []string{"plaintext", "anonymous", "untrusted", "trusted", "verified"} {
		if !seen[lv] {
			t.Errorf("no timeline segment of level %s (levels seen %v)", lv, seen)
		}
	}

	requests, problems := b.finish(t)
	if len(requests) > 0 {
		t.Errorf("the page made network requests: %q", requests)
	}
	if len(problems) > 0 {
		t.Errorf("console errors: %q", problems)
	}
	t.Logf("screenshot: %s (%d bytes), %d rows, %d timeline segments", shotPath, len(shot), rows, len(segs))
}
