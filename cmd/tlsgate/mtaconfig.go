package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tlsgate/tlsgate/internal/mtaconf"
	"github.com/tlsgate/tlsgate/internal/policy"
)

const mtaConfigHelp = `
Prints the MTA configuration that wires Postfix (main.cf parameters) or
Sendmail (.mc lines) to tlsgate, derived from the same file the daemons read
and merged with what the MTA already has.

Postfix: the current main.cf is read through postconf (--postconf-dir DIR for
another configuration directory) or from --main-cf FILE. tlsgate's milter
joins the smtpd_milters list first, with its own default_action=tempfail
(milter_default_action and the other milters are left alone); its policy
table goes first in smtp_tls_policy_maps; the check_policy_service entry for
fingerprint pins goes right after the relay check (reject_unauth_destination
or defer_unauth_destination) of smtpd_recipient_restrictions or
smtpd_relay_restrictions; a TLS security level stronger than "may" is kept.
Only the parameters that change are printed as "name = value", each with its
reason and former value; those already as needed are listed as comments.
--apply saves main.cf as main.cf.before-tlsgate (on the first run; later
runs add the time), sets the parameters with postconf -e, runs
"postfix check" (and puts main.cf back if it fails) and prints the diff;
then run "postfix reload".

Sendmail: the .mc lines, merged with --mc FILE (default
/etc/mail/sendmail.mc). Your access map (/etc/mail/access) stays yours:
tlsgate's answers come from a socket map of its own, consulted by
Local_tls_server, Local_tls_rcpt and Local_srv_features rulesets; a failed
lookup refuses the server before MAIL FROM. tlsgate's milter comes first in
InputMailFilters. --apply saves the .mc as FILE.before-tlsgate, puts the
lines in (replacing the blocks of an earlier run), checks the result with m4
(and puts the file back on a warning) and prints the diff; then rebuild
sendmail.cf (Debian: make -C /etc/mail) and restart Sendmail.
`

func cmdMTAConfig(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("mta-config", "tlsgate mta-config [-c FILE] [--apply] [--postconf-dir DIR | --main-cf FILE] [--queue-dir DIR] [--mc FILE]", mtaConfigHelp, stdout, stderr)
	file := fs.String("c", defaultConfig, "configuration `file`")
	qdir := fs.String("queue-dir", "/var/spool/postfix", "Postfix queue_directory; unix sockets below it are written relative to it")
	pcDir := fs.String("postconf-dir", "", "Postfix configuration `dir`ectory for postconf -c (default: Postfix's own)")
	mainCF := fs.String("main-cf", "", "merge with this main.cf `file` instead of asking postconf")
	mcFile := fs.String("mc", "", "Sendmail: merge with this .mc `file` (default /etc/mail/sendmail.mc if it exists)")
	apply := fs.Bool("apply", false, "change main.cf (postconf -e) or the .mc file, after a backup")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagExit(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "tlsgate mta-config: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	p, err := policy.Load(*file)
	if err != nil {
		printLoadError(stderr, err)
		return exitUsage
	}
	if p.MTA == policy.Sendmail {
		return sendmailConfig(p, *mcFile, *apply, stdout, stderr)
	}
	if *apply && *mainCF != "" {
		fmt.Fprintln(stderr, "tlsgate mta-config: --apply changes main.cf with postconf; give its directory with --postconf-dir, not --main-cf")
		return exitUsage
	}
	pf, err := mtaconf.ForPostfix(p, mtaconf.Options{PostfixQueueDir: *qdir})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	var cur mtaconf.Values
	from := "main.cf (postconf)"
	if *pcDir != "" {
		from = filepath.Join(*pcDir, "main.cf") + " (postconf)"
	}
	if *mainCF != "" {
		cur, err = mtaconf.ReadMainCF(*mainCF, pf.Names())
		from = *mainCF
	} else {
		cur, err = mtaconf.Postconf(*pcDir, pf.Names())
	}
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate mta-config: cannot read the current main.cf: %v\n(give Postfix's configuration directory with --postconf-dir DIR, or a main.cf with --main-cf FILE)\n", err)
		return exitUsage
	}
	changes, err := pf.Merge(cur)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate mta-config: %v\n", err)
		return exitUsage
	}
	if !*apply {
		fmt.Fprint(stdout, pf.Text(p.File, from, changes))
		return exitOK
	}
	return applyPostfix(*pcDir, changes, stdout, stderr)
}

// applyPostfix sets the changed parameters with postconf -e after a
// backup of main.cf, runs postfix check (restoring main.cf if it fails)
// and prints the diff.
func applyPostfix(dir string, changes []mtaconf.Change, stdout, stderr io.Writer) int {
	withDir := func(args ...string) []string {
		if dir != "" {
			return append([]string{"-c", dir}, args...)
		}
		return args
	}
	cfgDir := dir
	if cfgDir == "" {
		out, err := exec.Command("postconf", "-h", "config_directory").Output()
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate mta-config: postconf -h config_directory: %v\n", err)
			return exitRuntime
		}
		cfgDir = strings.TrimSpace(string(out))
	}
	path := filepath.Join(cfgDir, "main.cf")
	var set []string
	for _, c := range changes {
		if c.Changed {
			set = append(set, c.Name+"="+c.New)
		}
	}
	if len(set) == 0 {
		fmt.Fprintf(stdout, "%s already has what tlsgate needs; nothing changed\n", path)
		return exitOK
	}
	old, backup, err := backupFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate mta-config: %v\n", err)
		return exitRuntime
	}
	restore := func(why string) int {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			fmt.Fprintf(stderr, "tlsgate mta-config: %s, and %s could not be put back: %v; the original is %s\n", why, path, err, backup)
			return exitRuntime
		}
		fmt.Fprintf(stderr, "tlsgate mta-config: %s; %s is unchanged (backup %s)\n", why, path, backup)
		return exitRuntime
	}
	if out, err := exec.Command("postconf", withDir(append([]string{"-e"}, set...)...)...).CombinedOutput(); err != nil {
		return restore(fmt.Sprintf("postconf -e failed: %v: %s", err, strings.TrimSpace(string(out))))
	}
	check, err := exec.Command("postfix", withDir("check")...).CombinedOutput()
	if err != nil {
		return restore(fmt.Sprintf("postfix check failed (%v): %s", err, strings.TrimSpace(string(check))))
	}
	now, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate mta-config: %v\n", err)
		return exitRuntime
	}
	if len(bytes.TrimSpace(check)) > 0 {
		fmt.Fprintf(stdout, "postfix check:\n%s\n", strings.TrimSpace(string(check)))
	}
	fmt.Fprintf(stdout, "saved %s as %s; postfix check passed. Changes:\n", path, backup)
	fmt.Fprint(stdout, mtaconf.Diff(backup, path, old, now))
	fmt.Fprintln(stdout, "Now run: postfix reload")
	return exitOK
}

// sendmailMC is where Debian keeps sendmail.mc.
const sendmailMC = "/etc/mail/sendmail.mc"

func sendmailConfig(p *policy.Policy, mcFile string, apply bool, stdout, stderr io.Writer) int {
	if mcFile == "" {
		if _, err := os.Stat(sendmailMC); err == nil || apply {
			mcFile = sendmailMC
		}
	}
	var mc *mtaconf.MC
	var old []byte
	from := "no sendmail.mc (none given, none at " + sendmailMC + ")"
	if mcFile != "" {
		var err error
		old, err = os.ReadFile(mcFile)
		if err == nil {
			mc, err = mtaconf.ParseMC(mcFile, old)
		}
		if err != nil {
			fmt.Fprintf(stderr, "tlsgate mta-config: %v\n", err)
			return exitUsage
		}
		from = mcFile
	}
	sm, err := mtaconf.ForSendmail(p, mtaconf.StatSendmailFiles(p), mc)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	if !apply {
		fmt.Fprint(stdout, sm.Text(p.File, from))
		for _, c := range sm.Conflicts {
			fmt.Fprintf(stderr, "tlsgate mta-config: by hand: %s\n", c)
		}
		return exitOK
	}
	if len(sm.Conflicts) > 0 {
		for _, c := range sm.Conflicts {
			fmt.Fprintf(stderr, "tlsgate mta-config: %s\n", c)
		}
		fmt.Fprintf(stderr, "tlsgate mta-config: %d conflict(s); %s is unchanged\n", len(sm.Conflicts), mcFile)
		return exitUsage
	}
	now := mtaconf.ApplySendmail(mc, sm)
	if bytes.Equal(old, now) {
		fmt.Fprintf(stdout, "%s already has tlsgate's lines; nothing changed\n", mcFile)
		return exitOK
	}
	_, backup, err := backupFile(mcFile)
	if err != nil {
		fmt.Fprintf(stderr, "tlsgate mta-config: %v\n", err)
		return exitRuntime
	}
	if err := replaceFile(mcFile, now); err != nil {
		fmt.Fprintf(stderr, "tlsgate mta-config: %v\n", err)
		return exitRuntime
	}
	if warn, err := checkMC(mcFile); err != nil || warn != "" {
		why := fmt.Sprintf("m4 %s: %v %s", mcFile, err, warn)
		if rerr := replaceFile(mcFile, old); rerr != nil {
			fmt.Fprintf(stderr, "tlsgate mta-config: %s, and the file could not be put back: %v; the original is %s\n", why, rerr, backup)
			return exitRuntime
		}
		fmt.Fprintf(stderr, "tlsgate mta-config: %s; %s is unchanged (backup %s)\n", why, mcFile, backup)
		return exitRuntime
	}
	fmt.Fprintf(stdout, "saved %s as %s; m4 reads the new file without a warning. Changes:\n", mcFile, backup)
	fmt.Fprint(stdout, mtaconf.Diff(backup, mcFile, old, now))
	fmt.Fprintln(stdout, "Now rebuild sendmail.cf (Debian: make -C /etc/mail) and restart Sendmail.")
	return exitOK
}

// checkMC runs m4 over an .mc file from its directory, as Debian's
// Makefile does, and returns what m4 printed to stderr (Sendmail's cf
// files warn there) or its error. Without m4 it checks nothing.
func checkMC(path string) (string, error) {
	if _, err := exec.LookPath("m4"); err != nil {
		return "", nil
	}
	cmd := exec.Command("m4", filepath.Base(path))
	cmd.Dir = filepath.Dir(path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	err := cmd.Run()
	return strings.TrimSpace(stderr.String()), err
}

// backupFile copies path to path.before-tlsgate, or, when that exists (a
// backup of the state before tlsgate's first run), to
// path.before-tlsgate.TIME. It returns the file's content and the
// backup's name.
func backupFile(path string) ([]byte, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, "", err
	}
	backup := path + ".before-tlsgate"
	if _, err := os.Lstat(backup); err == nil {
		backup += "." + time.Now().Format("20060102T150405")
	}
	f, err := os.OpenFile(backup, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return nil, "", fmt.Errorf("back up %s: %w", path, err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, "", fmt.Errorf("back up %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, "", fmt.Errorf("back up %s: %w", path, err)
	}
	return b, backup, nil
}

// replaceFile writes data to path through a temporary file in the same
// directory and a rename, keeping path's mode and owner.
func replaceFile(path string, data []byte) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tlsgate-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
		tmp.Close()
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := tmp.Chown(int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, fs.ErrPermission) {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
