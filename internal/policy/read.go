package policy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// MaxFileSize bounds each configuration file tlsgate reads.
const MaxFileSize = 64 << 20

// Reading a file that is being written. An editor or cp that truncates a
// file and writes it again leaves, for a moment, a shorter file that is
// still valid TOML (with fewer endpoints, or none): read then, it would
// put a policy in force that nobody wrote. So a file is read between two
// fstat(2) calls on the open file and a stat(2) of its path, and read
// again when in between its size, modification or change time, or
// identity changed. It is also read again:
//
//   - when it was modified less than settleTime before: a writer may be
//     between two writes; the check is repeated once that time is over;
//   - when it is empty: a truncation in progress shows the new size before
//     the new times (seen on ext4), so an empty file must stay empty and
//     unchanged for emptyWait;
//   - when its content differs from the last read of the same file (same
//     device and inode) but its size and times do not account for it: the
//     times of a change in progress are not visible yet.
//
// After readAttempts reads that each saw a change, the file is refused.
// Replacing a file with mv(1) (rename) is never caught half-way.
const (
	settleTime   = 25 * time.Millisecond
	emptyWait    = 4 * settleTime
	readAttempts = 6
)

// fileState is what tells two versions of a file apart without reading it.
type fileState struct {
	dev, ino     uint64
	size         int64
	mtime, ctime syscall.Timespec
}

func stateOf(fi os.FileInfo) fileState {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileState{size: fi.Size()}
	}
	return fileState{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim, ctime: st.Ctim}
}

// changed returns the later of the modification and change times.
func (s fileState) changed() time.Time {
	m, c := time.Unix(s.mtime.Unix()), time.Unix(s.ctime.Unix())
	if c.After(m) {
		return c
	}
	return m
}

// content is one file's bytes as read, with their SHA-256 and the state
// the file had.
type content struct {
	data    []byte
	sum     [sha256.Size]byte
	state   fileState
	rereads int           // times the file was read again because it changed
	buf     *bytes.Buffer // holds data, from buffers; see release
}

// buffers are the buffers files are read into: a reload reads every file
// and keeps the bytes of only those that changed, and only until they are
// compiled, so the same few buffers serve (instead of garbage the size of
// the configuration, and the collections it would cost).
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// release gives c's buffer back; c.data must not be used afterwards.
// Nothing compiled keeps it: the decoder copies what it reads.
func (c *content) release() {
	if c.buf != nil {
		buffers.Put(c.buf)
		c.buf, c.data = nil, nil
	}
}

// errUnsettled says that a file changed while it was read.
var errUnsettled = errors.New("unsettled")

// readFile reads the file at path for Load: a regular file of at most
// MaxFileSize bytes, read while it does not change. prev is the last read
// of the same path, if any. Its errors are problems naming the file.
func readFile(path string, prev *fileRec) (content, *Problem) {
	for attempt := range readAttempts {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt) * settleTime)
		}
		c, err := readOnce(path)
		if err == nil && prev != nil && c.sum != prev.sum && c.state.sameTimes(prev.state) {
			c.release()
			err = errUnsettled
		}
		switch {
		case err == nil:
			c.rereads = attempt
			return c, nil
		case errors.Is(err, errUnsettled):
			continue
		}
		return content{}, &Problem{File: path, Msg: err.Error()}
	}
	return content{}, &Problem{File: path, Msg: fmt.Sprintf("changed while it was being read, %d times: it is being written; write the new file under another name and move it into place with mv", readAttempts)}
}

// sameTimes reports whether s and o are the same file with the same
// modification and change times.
func (s fileState) sameTimes(o fileState) bool {
	return s.dev == o.dev && s.ino == o.ino && s.mtime == o.mtime && s.ctime == o.ctime
}

// readOnce reads path once. It returns errUnsettled when the file changed
// while it was read, or may still be being written.
func readOnce(path string) (content, error) {
	// O_NONBLOCK: a FIFO without a writer reads as empty instead of
	// blocking (on SIGHUP, the daemon's signal loop) until one appears.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return content{}, fmt.Errorf("cannot read: %v", errors.Unwrap(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return content{}, fmt.Errorf("cannot read: %v", err)
	}
	regular := fi.Mode().IsRegular()
	buf := buffers.Get().(*bytes.Buffer)
	buf.Reset()
	done := false
	defer func() {
		if !done {
			buffers.Put(buf)
		}
	}()
	if regular {
		// Refuse an oversized file without reading it, and read a normal
		// one into a buffer of its size (not up to twice that).
		if fi.Size() > MaxFileSize {
			return content{}, fmt.Errorf("file is larger than %d bytes", MaxFileSize)
		}
		buf.Grow(int(fi.Size()) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(io.LimitReader(f, MaxFileSize+1)); err != nil {
		return content{}, fmt.Errorf("cannot read: %v", err)
	}
	if buf.Len() > MaxFileSize {
		return content{}, fmt.Errorf("file is larger than %d bytes", MaxFileSize)
	}
	c := content{data: buf.Bytes(), sum: sha256.Sum256(buf.Bytes()), buf: buf}
	if !regular {
		done = true
		return c, nil // a FIFO or device: nothing to compare
	}
	before := stateOf(fi)
	c.state = before
	wait := time.Duration(0)
	if age := time.Since(before.changed()); age >= 0 && age < settleTime {
		// Modified just now: a writer may be between two writes.
		wait = settleTime - age
	}
	if before.size == 0 {
		wait = emptyWait
	}
	for {
		after, err := f.Stat()
		if err != nil {
			return content{}, fmt.Errorf("cannot read: %v", err)
		}
		now, err := os.Stat(path)
		if err != nil {
			return content{}, errUnsettled // renamed or removed meanwhile: read the new one
		}
		if stateOf(after) != before || stateOf(now) != before || int64(buf.Len()) != before.size {
			return content{}, errUnsettled
		}
		if wait <= 0 {
			done = true // the caller releases it
			return c, nil
		}
		step := min(wait, settleTime)
		time.Sleep(step)
		wait -= step
	}
}
