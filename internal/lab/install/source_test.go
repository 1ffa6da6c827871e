package install

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsgate/tlsgate/internal/lab/debsys"
	"github.com/tlsgate/tlsgate/internal/lab/testpki"
)

// TestInstallFromSource follows README.md's "From source" path literally
// in a throwaway Debian system on Debian's own Postfix: make install in the
// source tree (the host's checkout, seen through the system's overlay, so
// the build writes nothing on the host), the steps the package's scripts
// would do, then the same configuration, wiring and start blocks as the
// package path; it proves the installed unit runs /usr/local/sbin/tlsgate
// and that the result refuses and verifies as it should.
func TestInstallFromSource(t *testing.T) {
	gate(t)
	tm := newTimer(t)
	blocks := readmeBlocks(t)
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go not found: make install needs it")
	}
	pki := testpki.NewT(t)
	sys := &system{debsys.New(t, debsys.Options{Hostname: "mx.lab.test"}), t}
	if err := sys.InstallSystemctl(); err != nil {
		t.Fatal(err)
	}
	if err := sys.SetSystemdRunning(true); err != nil {
		t.Fatal(err)
	}
	debianPostfix(t, sys)
	s := startSinks(t, sys, pki)
	tm.step("Debian Postfix")

	run := func(name, dir string) {
		t.Helper()
		body, ok := blocks[name]
		if !ok {
			t.Fatalf("README.md has no install-test block %q", name)
		}
		// README's Quick start puts Go on PATH the same way.
		script := "export PATH=" + filepath.Dir(gobin) + ":$PATH\ncd " + dir + "\n" + body
		out := sys.must(script)
		t.Logf("README block %q:\n%s\n--- output:\n%s", name, body, out)
	}
	run("source", sourceIn(t, sys))
	tm.step("make install and the manual steps")
	checkInstalled(t, sys, srcUnit, srcPostfixTmpfiles)
	if out := sys.must("grep '^ExecStart=' /usr/local/lib/systemd/system/tlsgate.service; ls /usr/local/share/doc/tlsgate/examples"); !strings.Contains(out, "ExecStart=/usr/local/sbin/tlsgate serve -c /etc/tlsgate/tlsgate.toml") || !strings.Contains(out, "tlsgate.example.toml") {
		t.Errorf("make install:\n%s", out)
	}
	if err := sys.WriteFile("/etc/tlsgate/tlsgate.toml", []byte(fmt.Sprintf(labConfig, pki.Sink.Fingerprint)), 0o644); err != nil {
		t.Fatal(err)
	}
	cas := append(mustRead(t, pki.CA.CertFile), mustRead(t, pki.OtherCA.CertFile)...)
	if err := sys.WriteFile("/root/partner-cas.pem", cas, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"ca-store", "ssl-cert", "postfix", "start"} {
		run(b, "/root")
	}
	waitSockets(t, sys)
	if out := sys.must("systemctl status tlsgate; readlink /proc/$(systemctl status tlsgate | sed -n 's/.*Main PID: //p')/exe"); !strings.Contains(out, "/usr/local/sbin/tlsgate") {
		t.Errorf("the running tlsgate is not /usr/local/sbin/tlsgate:\n%s", out)
	}
	tm.step("README configuration and start")
	inbound(t, sys)
	outbound(t, sys, s)
	tm.step("inbound and outbound")
}

// sourceIn returns the checkout's path inside sys. The system sees the
// host's files, but its /tmp and /run are tmpfs of its own: a checkout
// below them (CI may clone there) is copied to the same path inside.
func sourceIn(t *testing.T, sys *system) string {
	t.Helper()
	root := repoRoot(t)
	for _, private := range []string{"/tmp", "/run"} {
		if root == private || strings.HasPrefix(root, private+"/") {
			dst := sys.Path(root)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("cp", "-a", root, dst).CombinedOutput(); err != nil {
				t.Fatalf("copying the checkout into the system: %v\n%s", err, out)
			}
			break
		}
	}
	return root
}
