package posture

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestWriteJSONAsOneEncoding: the report written peer by peer is, byte for
// byte, what encoding the whole report at once gives, with peers, with one
// peer and with none.
func TestWriteJSONAsOneEncoding(t *testing.T) {
	full := labReport(t, "postfix.log", "sendmail.log")
	one := *full
	one.Peers = full.Peers[:1]
	none := *full
	none.Peers = nil
	for name, r := range map[string]*Report{"full": full, "one": &one, "none": &none} {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
		if got := reportJSON(t, r); got != want.String() {
			t.Errorf("%s: WriteJSON differs from one encoding:\n%s\nwant:\n%s", name, got, want.String())
		}
	}
}
