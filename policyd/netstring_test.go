package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadNetstring(t *testing.T) {
	mb := strings.Repeat("k", 1<<20)
	tests := []struct {
		name    string
		in      string
		limit   int
		want    string
		wantErr error // nil: success
		errSub  string
	}{
		{name: "simple", in: "5:hello,", limit: 100, want: "hello"},
		{name: "empty payload", in: "0:,", limit: 100, want: ""},
		{name: "request", in: "27:tlspolicy [127.0.0.1]:10026,", limit: 100, want: "tlspolicy [127.0.0.1]:10026"},
		{name: "payload with comma and colon", in: "5:a,b:c,", limit: 100, want: "a,b:c"},
		{name: "NUL bytes", in: "5:a\x00b\x00c,", limit: 100, want: "a\x00b\x00c"},
		{name: "non-UTF-8", in: "4:\xff\xfe\x80x,", limit: 100, want: "\xff\xfe\x80x"},
		{name: "exactly at limit", in: "3:abc,", limit: 3, want: "abc"},
		{name: "1 MB payload within limit", in: "1048576:" + mb + ",", limit: 1 << 20, want: mb},

		{name: "clean EOF", in: "", limit: 100, wantErr: io.EOF},
		{name: "leading zero", in: "05:hello,", limit: 100, wantErr: ErrBadLength, errSub: "leading zero"},
		{name: "double zero", in: "00:,", limit: 100, wantErr: ErrBadLength, errSub: "leading zero"},
		{name: "empty length", in: ":hello,", limit: 100, wantErr: ErrBadLength, errSub: "empty length"},
		{name: "non-digit", in: "x:hello,", limit: 100, wantErr: ErrBadLength, errSub: "'x'"},
		{name: "digit then letter", in: "5x:hello,", limit: 100, wantErr: ErrBadLength, errSub: "offset 1"},
		{name: "minus sign", in: "-1:,", limit: 100, wantErr: ErrBadLength},
		{name: "plus sign", in: "+1:a,", limit: 100, wantErr: ErrBadLength},
		{name: "space before colon", in: "5 :hello,", limit: 100, wantErr: ErrBadLength, errSub: "' '"},
		{name: "leading space", in: " 5:hello,", limit: 100, wantErr: ErrBadLength},
		{name: "NUL in length", in: "5\x00:hello,", limit: 100, wantErr: ErrBadLength, errSub: "0x00"},
		{name: "hex length", in: "0x5:hello,", limit: 100, wantErr: ErrBadLength},
		{name: "CRLF framing", in: "5:hello\r\n", limit: 100, wantErr: ErrMissingComma, errSub: "0x0d"},
		{name: "missing comma", in: "5:helloX", limit: 100, wantErr: ErrMissingComma, errSub: "'X'"},
		{name: "length too small", in: "4:hello,", limit: 100, wantErr: ErrMissingComma, errSub: "'o'"},
		{name: "over limit", in: "101:", limit: 100, wantErr: ErrTooLong, errSub: "length 101"},
		{name: "too many digits", in: "1000:", limit: 100, wantErr: ErrTooLong, errSub: "more than 3 digits"},
		{name: "overflowing length", in: "99999999999999999999:", limit: 10000, wantErr: ErrTooLong},
		{name: "huge digit run", in: strings.Repeat("9", 10000), limit: 10000, wantErr: ErrTooLong},
		{name: "1 MB key over default limit", in: "1048576:" + mb + ",", limit: 10000, wantErr: ErrTooLong},
		{name: "negative limit", in: "0:,", limit: -1, wantErr: ErrTooLong},
		{name: "EOF in length", in: "12", limit: 100, wantErr: ErrTruncated},
		{name: "EOF in payload", in: "5:hel", limit: 100, wantErr: ErrTruncated, errSub: "3 of 5"},
		{name: "EOF before comma", in: "5:hello", limit: 100, wantErr: ErrTruncated},
		{name: "claimed length far beyond data", in: "9999:abc", limit: 10000, wantErr: ErrTruncated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, wrap := range []struct {
				name string
				r    func(io.Reader) io.Reader
			}{{"whole", func(r io.Reader) io.Reader { return r }}, {"onebyte", iotest.OneByteReader}} {
				got, err := ReadNetstring(bufio.NewReader(wrap.r(strings.NewReader(tc.in))), tc.limit)
				if tc.wantErr == nil {
					if err != nil {
						t.Fatalf("%s: unexpected error %v", wrap.name, err)
					}
					if string(got) != tc.want {
						t.Fatalf("%s: got %q, want %q", wrap.name, truncate(got), truncate([]byte(tc.want)))
					}
					continue
				}
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("%s: error %v, want %v", wrap.name, err, tc.wantErr)
				}
				if tc.wantErr == io.EOF && err != io.EOF {
					t.Fatalf("%s: clean EOF must be io.EOF itself, got %#v", wrap.name, err)
				}
				if tc.wantErr != io.EOF && !strings.HasPrefix(err.Error(), "policyd: ") {
					t.Fatalf("%s: error %q lacks the policyd: prefix", wrap.name, err)
				}
				if !strings.Contains(err.Error(), tc.errSub) {
					t.Fatalf("%s: error %q does not mention %q", wrap.name, err, tc.errSub)
				}
			}
		})
	}
}

func truncate(b []byte) string {
	if len(b) > 40 {
		return string(b[:40]) + "..."
	}
	return string(b)
}

// TestReadNetstringTruncatedWrapsUnexpectedEOF checks the documented error chain.
func TestReadNetstringTruncatedWrapsUnexpectedEOF(t *testing.T) {
	_, err := ReadNetstring(bufio.NewReader(strings.NewReader("5:ab")), 10)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want it to wrap io.ErrUnexpectedEOF", err)
	}
}

// TestReadNetstringSequence reads back-to-back netstrings from one stream.
func TestReadNetstringSequence(t *testing.T) {
	var stream []byte
	payloads := []string{"a", "", "tlspolicy example.com", strings.Repeat("z", 5000), "last"}
	for _, p := range payloads {
		stream = AppendNetstring(stream, []byte(p))
	}
	br := bufio.NewReader(bytes.NewReader(stream))
	for i, want := range payloads {
		got, err := ReadNetstring(br, 10000)
		if err != nil || string(got) != want {
			t.Fatalf("netstring %d: got %q, %v", i, truncate(got), err)
		}
	}
	if _, err := ReadNetstring(br, 10000); err != io.EOF {
		t.Fatalf("after the last netstring: %v, want io.EOF", err)
	}
}

// TestReadNetstringBoundedMemory checks that a claimed length is not allocated up front:
// a peer that announces 1 MB and sends 10 bytes costs about a chunk, not a megabyte.
func TestReadNetstringBoundedMemory(t *testing.T) {
	in := "1000000:0123456789"
	var buf []byte
	buf, err := readNetstring(bufio.NewReader(strings.NewReader(in)), 1<<20, buf)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("got %v, want ErrTruncated", err)
	}
	if cap(buf) > 2*netstringChunk {
		t.Fatalf("payload buffer grew to %d bytes for 10 bytes received", cap(buf))
	}
}

func TestAppendNetstring(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "0:,"},
		{"hello", "5:hello,"},
		{"NOTFOUND ", "9:NOTFOUND ,"},
		{"a\x00b", "3:a\x00b,"},
		{strings.Repeat("x", 12345), "12345:" + strings.Repeat("x", 12345) + ","},
	}
	for _, tc := range tests {
		got := AppendNetstring([]byte("pre"), []byte(tc.in))
		if string(got) != "pre"+tc.want {
			t.Errorf("AppendNetstring(%q) = %q, want %q", truncate([]byte(tc.in)), truncate(got), truncate([]byte(tc.want)))
		}
	}
}

// TestNetstringZeroAlloc checks the hot path: reading into a reused buffer and appending
// into a reused buffer allocate nothing.
func TestNetstringZeroAlloc(t *testing.T) {
	req := []byte("27:tlspolicy [127.0.0.1]:10026,")
	rd := bytes.NewReader(req)
	br := bufio.NewReader(rd)
	buf := make([]byte, 0, 64)
	out := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		rd.Reset(req)
		br.Reset(rd)
		var err error
		buf, err = readNetstring(br, 10000, buf[:0])
		if err != nil {
			t.Fatal(err)
		}
		out = AppendNetstring(out[:0], buf)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per request, want 0", allocs)
	}
}

func FuzzReadNetstring(f *testing.F) {
	for _, s := range []string{"5:hello,", "0:,", "05:hello,", "99999999999999999999:", "5:helloX", "27:tlspolicy [127.0.0.1]:10026,", "3:a\x00b,", "2:\xff\xfe,", ":,", "1:a,1:b,"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1000
		br := bufio.NewReader(bytes.NewReader(data))
		consumed := 0
		for {
			p, err := ReadNetstring(br, limit)
			if err == io.EOF {
				if consumed != len(data) {
					t.Fatalf("io.EOF after %d of %d bytes", consumed, len(data))
				}
				return
			}
			if err != nil {
				if !errors.Is(err, ErrBadLength) && !errors.Is(err, ErrTooLong) && !errors.Is(err, ErrMissingComma) && !errors.Is(err, ErrTruncated) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if len(p) > limit {
				t.Fatalf("payload of %d bytes exceeds limit %d", len(p), limit)
			}
			// Strictness: what was accepted is exactly the canonical encoding.
			enc := AppendNetstring(nil, p)
			if !bytes.Equal(enc, data[consumed:consumed+len(enc)]) {
				t.Fatalf("accepted %q, canonical form %q", data[consumed:consumed+len(enc)], enc)
			}
			consumed += len(enc)
		}
	})
}

func TestNetstringComplete(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"", false},
		{"1", false},
		{"12", false},
		{"5:hel", false},
		{"5:hello", false},
		{"5:hello,", true},
		{"5:hello,7:", true},
		{"0:,", true},
		{":", true},            // fails at once: empty length
		{"x", true},            // fails at once: bad byte
		{"1x", true},           // fails at once
		{"9999999", false},     // 7 digits: could still be valid for some limit... needs ':'
		{"99999999", true},     // 8 digits: over MaxRequestLimit, fails at once
		{"1048576:abc", false}, // valid length, payload still coming
	}
	for _, tc := range tests {
		if got := netstringComplete([]byte(tc.in)); got != tc.want {
			t.Errorf("netstringComplete(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
