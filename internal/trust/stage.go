package trust

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/tlsgate/tlsgate/internal/policy"
)

// Staged is the CA bundle and the trust-anchor files of a new policy,
// written completely under temporary names beside the files they replace,
// so that the MTA never reads a file of a policy that is not in force:
// Commit puts them all in place (or, if one cannot be, none), Abort
// removes them. A Staged is used once.
type Staged struct {
	files []*stagedFile
	done  bool
}

// stagedFile is one file of a Staged.
type stagedFile struct {
	target  string // where the file goes
	tmp     string // its new content, beside target; "" once renamed into place
	backup  string // a hard link to (or copy of) the file target held, "" if none
	existed bool   // target existed before Commit
}

// Stage writes what Write writes, each file under a temporary name in the
// directory of the file it replaces (created, mode 0755 less the umask,
// when missing; its parent must exist). A file that cannot be written
// removes every temporary file written before it, and nothing is replaced.
func (plan *Plan) Stage(p *policy.Policy) (_ *Staged, err error) {
	st := &Staged{}
	defer func() {
		if err != nil {
			st.Abort()
		}
	}()
	if plan.Store != nil && WritesBundle(p) {
		if err := makeDir(filepath.Dir(p.Settings.CABundle)); err != nil {
			return nil, fmt.Errorf("[certs] ca_bundle: %w", err)
		}
		data, err := plan.Store.TrustAnchorsPEM(p.Settings.CABundle, nil)
		if err != nil {
			return nil, err
		}
		if err := st.add(p.Settings.CABundle, data); err != nil {
			return nil, err
		}
	}
	if len(plan.Anchors) > 0 {
		if err := makeDir(filepath.Clean(p.Settings.TrustAnchorDir)); err != nil {
			return nil, fmt.Errorf("[certs] trust_anchor_dir: %w", err)
		}
	}
	paths := make([]string, 0, len(plan.Anchors))
	for path := range plan.Anchors {
		paths = append(paths, path)
	}
	slices.Sort(paths) // the same order every time
	for _, path := range paths {
		want := map[*x509.Certificate]bool{}
		for _, c := range plan.Anchors[path] {
			want[c] = true
		}
		path = filepath.Clean(path)
		data, err := plan.Store.TrustAnchorsPEM(path, func(c *x509.Certificate) bool { return want[c] })
		if err != nil {
			return nil, err
		}
		if err := st.add(path, data); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Files returns the paths Commit replaces, in the order it replaces them.
func (st *Staged) Files() []string {
	out := make([]string, len(st.files))
	for i, f := range st.files {
		out[i] = f.target
	}
	return out
}

// add writes data (mode 0644) to a new temporary file beside target.
func (st *Staged) add(target string, data []byte) error {
	if err := replaceable(target); err != nil {
		return err
	}
	dir, base := filepath.Split(target)
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("trust: write %s: %w", target, err)
	}
	f := &stagedFile{target: target, tmp: tmp.Name()}
	st.files = append(st.files, f)
	// CreateTemp makes the file 0600; the MTA's processes must read it.
	err = tmp.Chmod(0o644)
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("trust: write %s: %w", target, err)
	}
	return nil
}

// replaceable refuses a target that is neither missing, a regular file
// nor a symbolic link (which is replaced itself, never written through).
func replaceable(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("trust: %w", err)
	case fi.Mode().IsRegular() || fi.Mode()&fs.ModeSymlink != 0:
		return nil
	}
	return fmt.Errorf("trust: %s is not a regular file (%s); not replacing it", path, fi.Mode().Type())
}

// Commit renames every staged file into place. If one cannot be, the
// files already replaced get their previous content back (a file that
// did not exist is removed again), the temporary files are removed and
// the error names the file: the files are then exactly as before.
func (st *Staged) Commit() error {
	if st.done {
		return errors.New("trust: staged files used twice")
	}
	st.done = true
	for i, f := range st.files {
		if err := f.replace(); err != nil {
			for j := i; j >= 0; j-- {
				st.files[j].restore()
			}
			st.cleanup()
			return fmt.Errorf("trust: put %s in place: %w; every file written for this policy was restored", f.target, err)
		}
	}
	dirs := map[string]bool{}
	for _, f := range st.files {
		if f.backup != "" {
			os.Remove(f.backup)
			f.backup = ""
		}
		dirs[filepath.Dir(f.target)] = true
	}
	for dir := range dirs {
		syncDir(dir)
	}
	return nil
}

// Abort removes the staged files; the files they were to replace are not
// touched.
func (st *Staged) Abort() {
	if st == nil || st.done {
		return
	}
	st.done = true
	st.cleanup()
}

// cleanup removes what is left of temporary and backup files.
func (st *Staged) cleanup() {
	for _, f := range st.files {
		if f.tmp != "" {
			os.Remove(f.tmp)
			f.tmp = ""
		}
		if f.backup != "" {
			os.Remove(f.backup)
			f.backup = ""
		}
	}
}

// replace keeps the current file as a backup (a hard link, so that the
// file never goes missing; a copy where the file system has none) and
// renames the new content over it.
func (f *stagedFile) replace() error {
	if err := replaceable(f.target); err != nil {
		return err
	}
	if _, err := os.Lstat(f.target); err == nil {
		f.existed = true
		f.backup = f.tmp + ".old"
		os.Remove(f.backup)
		if err := os.Link(f.target, f.backup); err != nil {
			if err := copyFile(f.target, f.backup); err != nil {
				f.backup = ""
				return fmt.Errorf("keep a copy of the previous file: %w", err)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(f.tmp, f.target); err != nil {
		return err
	}
	f.tmp = ""
	return nil
}

// restore undoes replace: the previous file comes back from its backup,
// or a file that did not exist is removed.
func (f *stagedFile) restore() {
	if f.tmp != "" {
		return // never renamed; cleanup removes it
	}
	if f.backup != "" {
		if os.Rename(f.backup, f.target) == nil {
			f.backup = ""
		}
	} else if !f.existed {
		os.Remove(f.target)
	}
}

// copyFile copies a regular file's bytes, or a symbolic link as a link.
func copyFile(src, dst string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// syncDir makes the renames in dir durable; not every file system
// supports fsync on a directory, and the data itself is synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
