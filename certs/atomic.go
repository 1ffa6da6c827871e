package certs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeFileAtomic writes data to path with the given permission bits so that
// readers see either the old file or the complete new one, never a partial
// write: it writes a temporary file in the same directory, syncs it, and
// renames (force) or hard-links (no force) it into place. Without force an
// existing path is never replaced, even if it appears concurrently; with
// force only a regular file or a symbolic link is (see checkReplaceable).
func writeFileAtomic(path string, data []byte, perm fs.FileMode, force bool) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if !force {
		if _, err := os.Lstat(path); err == nil {
			return existsError(path)
		}
	} else if err := checkReplaceable(path); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	tmpName := tmp.Name()
	defer func() {
		if tmp != nil {
			tmp.Close()
		}
		os.Remove(tmpName) // no-op after a successful rename
	}()
	// Set the mode explicitly: CreateTemp uses 0600 and the umask must not
	// matter for a file whose permissions are part of its meaning.
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		tmp = nil
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	tmp = nil
	if force {
		if err := os.Rename(tmpName, path); err != nil {
			return fmt.Errorf("certs: write %s: %w", path, err)
		}
	} else {
		// link(2) fails with EEXIST instead of replacing: no window in which
		// a file created by someone else could be clobbered.
		if err := os.Link(tmpName, path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return existsError(path)
			}
			// No hard links on this file system: check, then rename.
			if _, lerr := os.Lstat(path); lerr == nil {
				return existsError(path)
			}
			if err := os.Rename(tmpName, path); err != nil {
				return fmt.Errorf("certs: write %s: %w", path, err)
			}
		}
	}
	syncDir(dir)
	return nil
}

// checkReplaceable returns nil if --force may replace path: it does not
// exist, or it is a regular file, or a symbolic link. A symbolic link is
// replaced itself, never written through: the link may point anywhere
// (a device, /etc/shadow, a file another tool manages) and what tlsgate
// writes must land where the admin named it, so the target stays
// untouched (see linkNote). Anything else (a device node such as
// /dev/null, a directory, a named pipe, a socket) is refused: renaming
// over it would remove a system file, and writing into it would not
// store the key.
func checkReplaceable(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	var what string
	switch t := fi.Mode().Type(); t {
	case 0, fs.ModeSymlink:
		return nil
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		what = "a device"
	case fs.ModeDir:
		what = "a directory"
	case fs.ModeNamedPipe:
		what = "a named pipe"
	case fs.ModeSocket:
		what = "a socket"
	default:
		what = "not a regular file (" + t.String() + ")"
	}
	return fmt.Errorf("certs: %s is %s; --force replaces only regular files (and symbolic links, the link itself): not touching it", path, what)
}

// linkNote says, if path is a symbolic link, that --force will replace the
// link and leave its target alone; "" otherwise.
func linkNote(path string) string {
	target, err := os.Readlink(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("note: %s was a symbolic link to %s; it is now a regular file, and %s was left unchanged\n", path, target, target)
}

// existsError reports a refused overwrite; errors.Is(err, fs.ErrExist) holds.
func existsError(path string) error { return &existsErr{path} }

type existsErr struct{ path string }

func (e *existsErr) Error() string {
	return "certs: " + e.path + " already exists, not overwriting it (use --force to replace it)"
}

func (e *existsErr) Unwrap() error { return fs.ErrExist }

// syncDir makes a rename durable; errors are ignored because not every file
// system supports fsync on directories and the data itself is already synced.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
