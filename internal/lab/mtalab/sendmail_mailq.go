package mtalab

import (
	"os"
	"path/filepath"
	"strings"
)

// MailqCommand writes an executable script into the instance's directory
// that lists its queue as mailq does (sendmail -C CF -bp, the extracted
// binary in a private namespace whose host name lookups stay on files)
// and returns its path: what tlsgate's [watch] mailq or whatif --mailq
// run.
func (s *Sendmail) MailqCommand() (string, error) {
	libs, _ := filepath.Glob(filepath.Join(s.root, "usr/lib/*-linux-gnu*"))
	env := []string{"LD_LIBRARY_PATH=" + strings.Join(libs, ":")}
	inner := nsScript(s.binds, "", "", env, []string{filepath.Join(s.root, sendmailBin), "-C", s.cf, "-bp"})
	script := "#!/bin/sh\nexec unshare -m --propagation private sh -c " + shq(inner) + "\n"
	path := filepath.Join(s.dir, "mailq")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		return "", err
	}
	return path, nil
}
