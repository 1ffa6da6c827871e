package hostile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// These tests hold tlsgate serve to what its log says: a reload that says
// result=failed changed nothing the MTA reads, and one that says
// result=ok is in force, all of it.

// trustLab is a CA store with the lab CA and the other CA, and where
// serve writes the CA bundle and the trust-anchor files.
type trustLab struct {
	pki                  *testpki.PKI
	dir, store, ta, bund string
}

func newTrustLab(t *testing.T) *trustLab {
	t.Helper()
	l := &trustLab{pki: testpki.NewT(t), dir: t.TempDir()}
	l.store, l.ta, l.bund = filepath.Join(l.dir, "ca"), filepath.Join(l.dir, "ta"), filepath.Join(l.dir, "bundle.pem")
	if err := os.Mkdir(l.store, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*testpki.Cert{"lab-ca.pem": l.pki.CA, "other-ca.pem": l.pki.OtherCA} {
		data, err := os.ReadFile(c.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(l.store, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return l
}

// certs is the [certs] table of the lab.
func (l *trustLab) certs() string {
	return "ca_store = \"" + l.store + "\"\nca_bundle = \"" + l.bund + "\"\ntrust_anchor_dir = \"" + l.ta + "\"\n"
}

// files reads the bundle and every file in the trust-anchor directory
// (temporary files included, by name).
func (l *trustLab) files(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	data, err := os.ReadFile(l.bund)
	if err != nil {
		t.Fatal(err)
	}
	out["bundle.pem"] = string(data)
	des, _ := os.ReadDir(l.ta)
	for _, de := range des {
		if de.IsDir() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(l.ta, de.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out["ta/"+de.Name()] = string(data)
	}
	des, _ = os.ReadDir(l.dir)
	for _, de := range des {
		if strings.Contains(de.Name(), ".tmp-") {
			out[de.Name()] = "(temporary)"
		}
	}
	return out
}

func sameTrustFiles(t *testing.T, got, want map[string]string) {
	t.Helper()
	for name, data := range want {
		if got[name] != data {
			t.Errorf("%s changed by a failed reload", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("%s left behind by a failed reload", name)
		}
	}
}

// pinEndpoints pins endpoint a's outbound issuer to issuerA (with cn
// cnA), b's to issuerB, and, if zz, a third endpoint to the lab CA. Its
// trust-anchor file sorts last of all.
func pinEndpoints(issuerA, cnA, issuerB string, zz bool) string {
	s := `
[[endpoint]]
name  = "a"
hosts = ["a.example"]
  [endpoint.outbound]
  ` + issuerA + `
  cn = "` + cnA + `"
[[endpoint]]
name  = "b"
hosts = ["b.example"]
  [endpoint.outbound]
  ` + issuerB + `
`
	if zz {
		s += `
[[endpoint]]
name  = "zz"
hosts = ["z.example"]
  [endpoint.outbound]
  issuer_cn = "Lab Test CA"
`
	}
	return s
}

// TestReloadTrustFilesAllOrNothing: a reload whose last trust-anchor file
// cannot be written (a directory took its place) fails, and the CA
// bundle and every earlier trust-anchor file are byte-identical to those
// of the policy in force, with no temporary file left; the policy in
// force still answers. Once the directory is gone the same file reloads
// and every file holds the new issuers.
func TestReloadTrustFilesAllOrNothing(t *testing.T) {
	t.Parallel()
	l := newTrustLab(t)
	labCN, otherDN := `issuer_cn = "Lab Test CA"`, `issuer_dn = "CN=Other CA, O=Other Org, C=DE"`
	genA := conf{Certs: l.certs(), Endpoints: pinEndpoints(labCN, "mx.a.example", otherDN, false)}
	genB := conf{Certs: l.certs(), Endpoints: pinEndpoints(otherDN, "mx2.a.example", labCN, true)}
	d := startDaemon(t, genA)
	answerA := "OK secure match=mx.a.example tafile=" + filepath.Join(l.ta, "a.pem")
	d.wantLookup(t, "a.example", answerA)
	before := l.files(t)
	if len(before) != 3 || !strings.Contains(before["ta/a.pem"], "Lab Test CA") || !strings.Contains(before["ta/b.pem"], "Other CA") {
		t.Fatalf("generation A's files: %v", keys(before))
	}

	if err := os.Mkdir(filepath.Join(l.ta, "zz.pem"), 0o755); err != nil {
		t.Fatal(err)
	}
	mark := d.logs.mark()
	d.writeConf(genB)
	d.reload()
	d.logs.waitFor(t, mark, "reload result=failed", 30*time.Second)
	if d.logs.count(mark, "zz.pem is not a regular file") == 0 {
		t.Errorf("the failed reload does not name zz.pem:\n%s", d.logs.tail(10))
	}
	sameTrustFiles(t, l.files(t), before)
	d.wantLookup(t, "a.example", answerA)

	os.Remove(filepath.Join(l.ta, "zz.pem"))
	mark = d.logs.mark()
	d.reload()
	d.logs.waitFor(t, mark, "reload result=ok", 30*time.Second)
	after := l.files(t)
	if len(after) != 4 || !strings.Contains(after["ta/a.pem"], "Other CA") || strings.Contains(after["ta/a.pem"], "Lab Test CA") ||
		!strings.Contains(after["ta/b.pem"], "Lab Test CA") || !strings.Contains(after["ta/zz.pem"], "Lab Test CA") {
		t.Errorf("generation B's files: %v", keys(after))
	}
	d.wantLookup(t, "a.example", "OK secure match=mx2.a.example tafile="+filepath.Join(l.ta, "a.pem"))
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestReloadRestartNeeded: a reload that changes what the running daemon
// took at start (adding delegation_listen for a new fingerprint endpoint
// that needs it, a socket mode, the metrics listener) is refused with
// "restart needed: SETTING changed"; the previous policy stays in force
// (the new endpoint is not there, no delegation socket appears) and the
// metrics count it as failed. A new log level is applied: debug lines
// appear after the reload that sets it.
func TestReloadRestartNeeded(t *testing.T) {
	t.Parallel()
	base := conf{NoDelegation: true, Metrics: true, Endpoints: endpointsB}
	d := startDaemon(t, base)
	pinned := `
[[endpoint]]
name  = "pinned"
hosts = ["192.0.2.30", "pinned.example"]
  [endpoint.inbound]
  validate_cert = false
  fingerprints  = ["sha256:3D:95:34:A2:1B:7E:0F:C8:9D:11:5A:6B:E4:72:90:CC:41:0E:BA:58:77:23:9F:D6:8A:C5:13:44:60:B2:E9:0F"]
  [endpoint.outbound]
  encryption = true
`
	plain := strings.Replace(pinned, "validate_cert = false\n  fingerprints", "encryption = true\n  # fingerprints", 1)
	for _, tc := range []struct {
		name, want string
		c          conf
	}{
		{"delegation_listen added", "[policyd] delegation_listen", conf{Metrics: true, Endpoints: endpointsB + pinned}},
		{"milter socket_mode", "[milter] socket_mode", conf{NoDelegation: true, Metrics: true, MilterMode: "0600", Endpoints: endpointsB + plain}},
		{"metrics listener removed", "[metrics] listen", conf{NoDelegation: true, Endpoints: endpointsB + plain}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			failed := d.metric(t, `tlsgate_reloads_total{result="failed"}`)
			mark := d.logs.mark()
			d.writeConf(tc.c)
			d.reload()
			line := d.logs.waitFor(t, mark, "reload result=", 30*time.Second)
			if !strings.Contains(line, "result=failed") || d.logs.count(mark, "restart needed: "+tc.want+" changed") != 1 {
				t.Fatalf("want a refused reload naming %s:\n%s", tc.want, strings.Join(d.logs.since(mark), "\n"))
			}
			d.wantLookup(t, "pinned.example", answerNotFound)
			d.wantLookup(t, "partner.example", answerPartnerB)
			if _, err := os.Stat(d.delegation); err == nil {
				t.Error("a delegation socket appeared")
			}
			if got := d.metric(t, `tlsgate_reloads_total{result="failed"}`); got != max(failed, 0)+1 {
				t.Errorf("failed reloads %v, want %v", got, max(failed, 0)+1)
			}
		})
	}

	// The log level applies: answered lookups are logged at debug only.
	d.writeConf(base)
	mark := d.logs.mark()
	d.reload()
	d.logs.waitFor(t, mark, "reload result=ok", 30*time.Second)
	mark = d.logs.mark()
	d.wantLookup(t, "partner.example", answerPartnerB)
	debug := base
	debug.Level = "debug"
	d.writeConf(debug)
	d.reload()
	d.logs.waitFor(t, mark, "reload result=ok", 30*time.Second)
	if n := d.logs.count(mark, "partner.example"); n != 0 {
		t.Errorf("a lookup was logged at level info:\n%s", strings.Join(d.logs.since(mark), "\n"))
	}
	mark = d.logs.mark()
	d.wantLookup(t, "partner.example", answerPartnerB)
	d.logs.waitFor(t, mark, "partner.example", 10*time.Second)
}

// TestReloadKeepsUnreadableCA: a CA store file that is cut short is
// logged at start (left out of the bundle); once a CA in force can no
// longer be used (its file cut short, or a dangling link in its place),
// a reload is refused naming the file and the CA, and the bundle keeps
// it, byte for byte. Removing the file is a choice: the reload after that
// is taken and the bundle no longer has the CA.
func TestReloadKeepsUnreadableCA(t *testing.T) {
	t.Parallel()
	l := newTrustLab(t)
	lab, _ := os.ReadFile(l.pki.CA.CertFile)
	if err := os.WriteFile(filepath.Join(l.store, "junk.pem"), lab[:len(lab)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	c := conf{Certs: l.certs()}
	d := startDaemon(t, c)
	d.logs.waitFor(t, 0, "junk.pem left out of the CA bundle", 10*time.Second)
	before := l.files(t)
	if strings.Count(before["bundle.pem"], "BEGIN CERTIFICATE") != 2 {
		t.Fatalf("bundle at start:\n%s", before["bundle.pem"])
	}
	other := filepath.Join(l.store, "other-ca.pem")
	otherPEM, _ := os.ReadFile(other)
	for _, tc := range []struct {
		name  string
		spoil func() error
	}{
		{"cut short", func() error { return os.WriteFile(other, otherPEM[:len(otherPEM)-40], 0o644) }},
		{"dangling link", func() error { os.Remove(other); return os.Symlink("gone.pem", other) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.spoil(); err != nil {
				t.Fatal(err)
			}
			mark := d.logs.mark()
			d.reload()
			d.logs.waitFor(t, mark, "reload result=failed", 30*time.Second)
			if d.logs.count(mark, "other-ca.pem") == 0 || d.logs.count(mark, "held CN=Other CA") == 0 {
				t.Errorf("the refusal does not name the file and its CA:\n%s", strings.Join(d.logs.since(mark), "\n"))
			}
			sameTrustFiles(t, l.files(t), before)
		})
	}
	os.Remove(other)
	mark := d.logs.mark()
	d.reload()
	d.logs.waitFor(t, mark, "reload result=ok", 30*time.Second)
	if b := l.files(t)["bundle.pem"]; strings.Count(b, "BEGIN CERTIFICATE") != 1 || strings.Contains(b, "Other CA") {
		t.Errorf("bundle after the file was removed:\n%s", b)
	}
	d.checkServed(t)
}

// partnerEndpoints returns n endpoints p0 ... p(n-1), each with host
// pK.example and outbound encryption.
func partnerEndpoints(prefix string, n int) string {
	var b strings.Builder
	for k := range n {
		fmt.Fprintf(&b, "[[endpoint]]\nname = \"%s%d\"\nhosts = [\"%s%d.example\"]\n  [endpoint.outbound]\n  encryption = true\n", prefix, k, prefix, k)
	}
	return b.String()
}

// TestReloadIncludedFiles: the daemon reads conf.d/*.toml. A bad file
// there fails the reload and keeps the whole previous policy (the good
// files changed with it are not taken either); a deleted file's
// endpoints are gone; a renamed file's endpoints stay. Each reload line
// says what changed.
func TestReloadIncludedFiles(t *testing.T) {
	t.Parallel()
	confd := t.TempDir()
	write := func(name, data string) { writeFileAtomic(t, filepath.Join(confd, name), []byte(data)) }
	write("a.toml", partnerEndpoints("a", 3))
	write("b.toml", partnerEndpoints("b", 2))
	d := startDaemon(t, conf{Include: `["` + confd + `/*.toml"]`})
	d.wantLookup(t, "a2.example", "OK encrypt")
	d.wantLookup(t, "b1.example", "OK encrypt")

	mark := d.logs.mark()
	write("c.toml", partnerEndpoints("c", 1))
	write("b.toml", partnerEndpoints("b", 2)+"[[endpoint]]\nname = \"broken\"\nhosts = [\"x.example\"]\n  [endpoint.outbound]\n  min_bits = 1\n")
	d.reload()
	d.logs.waitFor(t, mark, "reload result=failed", 30*time.Second)
	if d.logs.count(mark, "file="+filepath.Join(confd, "b.toml")+" line=15") == 0 {
		t.Errorf("the problem does not name b.toml and its line:\n%s", strings.Join(d.logs.since(mark), "\n"))
	}
	d.wantLookup(t, "c0.example", answerNotFound)
	d.wantLookup(t, "b1.example", "OK encrypt")
	d.checkServed(t)

	mark = d.logs.mark()
	write("b.toml", partnerEndpoints("b", 2))
	d.reload()
	line := d.logs.waitFor(t, mark, "reload result=", 30*time.Second)
	if !strings.Contains(line, "result=ok") || !strings.Contains(line, " files=4 files_changed=1 compiled=1 added=1 changed=0 removed=0 ") {
		t.Errorf("reload line: %s", line)
	}
	d.wantLookup(t, "c0.example", "OK encrypt")

	mark = d.logs.mark()
	if err := os.Remove(filepath.Join(confd, "b.toml")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(confd, "a.toml"), filepath.Join(confd, "z.toml")); err != nil {
		t.Fatal(err)
	}
	d.reload()
	line = d.logs.waitFor(t, mark, "reload result=", 30*time.Second)
	if !strings.Contains(line, "result=ok") || !strings.Contains(line, " files=3 files_changed=3 compiled=1 added=0 changed=0 removed=2 ") {
		t.Errorf("reload line: %s", line)
	}
	d.wantLookup(t, "b1.example", answerNotFound)
	d.wantLookup(t, "a2.example", "OK encrypt")
	d.checkServed(t)
}

// TestReloadHalfWrittenFile: while a writer rewrites an included file in
// place (truncate, part of it, a pause, the rest), as an editor or cp
// does, SIGHUPs come one after the other. Every reload that is taken has
// all endpoints (none from a file cut short), and a client asking for the
// last endpoint of that file never gets NOTFOUND. The daemon must have
// read the file again at least once (rereads=), or the test proves
// nothing.
func TestReloadHalfWrittenFile(t *testing.T) {
	t.Parallel()
	const n = 200
	confd := t.TempDir()
	big := filepath.Join(confd, "big.toml")
	full := []byte(partnerEndpoints("p", n))
	writeFileAtomic(t, big, full)
	d := startDaemon(t, conf{Include: `["` + confd + `/*.toml"]`})
	want := fmt.Sprintf(" endpoints=%d ", n+4)
	last := fmt.Sprintf("p%d.example", n-1)
	d.wantLookup(t, last, "OK encrypt")

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes, lookups, wrong atomic.Int64
	wg.Go(func() {
		f, err := os.OpenFile(big, os.O_WRONLY, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		for i := 0; ; i++ {
			select {
			case <-stop:
				f.Truncate(0)
				f.WriteAt(full, 0)
				return
			default:
			}
			cut := len(full) / 4 * (1 + i%3)
			f.Truncate(0)
			f.WriteAt(full[:cut], 0)
			time.Sleep(time.Duration(1+i%3) * time.Millisecond)
			f.WriteAt(full[cut:], int64(cut))
			writes.Add(1)
			if i%25 == 24 {
				time.Sleep(150 * time.Millisecond) // a quiet moment, so that reloads get through
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := d.lookup("tlspolicy", last)
			lookups.Add(1)
			if err != nil || r.String() != "OK encrypt" {
				wrong.Add(1)
				t.Errorf("%s → %q, %v", last, r.String(), err)
				return
			}
		}
	})
	var ok, failed int
	for range 30 {
		mark := d.logs.mark()
		d.reload()
		line := d.logs.waitFor(t, mark, "reload result=", 30*time.Second)
		switch {
		case strings.Contains(line, "result=ok") && strings.Contains(line, want):
			ok++
		case strings.Contains(line, "result=ok"):
			t.Errorf("a reload took a file cut short: %s", line)
		default:
			failed++
		}
	}
	close(stop)
	wg.Wait()
	rereads := d.logs.count(0, "rereads=")
	record("reload: an included file rewritten in place", "%d rewrites during 30 reloads: %d taken whole, %d refused, %d read the file again; %d lookups of its last endpoint, %d wrong", writes.Load(), ok, failed, rereads, lookups.Load(), wrong.Load())
	if rereads == 0 || ok == 0 {
		t.Errorf("%d reloads taken, %d saw the file change: the reloads and the writes did not overlap", ok, rereads)
	}
	d.checkServed(t)
}

// TestSignalsDuringStart: a SIGHUP that arrives while serve is still
// starting (it has read the configuration and the CA store, its listeners
// may not be open yet) is a reload once the daemon runs, not the end of
// the process; a SIGTERM then stops it with exit status 0 (d.stop).
func TestSignalsDuringStart(t *testing.T) {
	t.Parallel()
	l := newTrustLab(t)
	lab, _ := os.ReadFile(l.pki.CA.CertFile)
	// A store file that is logged as left out: the first line serve
	// writes, before it opens its listeners.
	if err := os.WriteFile(filepath.Join(l.store, "junk.pem"), lab[:len(lab)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	d := launchDaemon(t, conf{Certs: l.certs()})
	d.logs.waitFor(t, 0, "junk.pem left out of the CA bundle", 30*time.Second)
	if err := syscall.Kill(d.pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.logs.waitFor(t, 0, "reload result=ok", 30*time.Second)
	d.waitListening()
	d.wantLookup(t, "partner.example", answerPartnerA)
}
