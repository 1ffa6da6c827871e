package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// TestPostfixRoutesInlineMap: transport_maps is split as Postfix splits
// a list, so that an inline:{ ... } table with commas inside stays one
// table; real postconf and postmap answer from it, and relayhost routes
// the other domains.
func TestPostfixRoutesInlineMap(t *testing.T) {
	postqueue, err := exec.LookPath("postqueue")
	if err != nil {
		if postqueue, err = exec.LookPath("/usr/sbin/postqueue"); err != nil {
			t.Skip("Postfix is not installed")
		}
	}
	dir := t.TempDir()
	mainCF := "transport_maps = inline:{ partner.example=smtp:[127.0.0.9]:2525, .sub.example=smtp:[127.0.0.8] }\nrelayhost = [127.0.0.7]:587\n"
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &postfixRoutes{dir: dir, postqueue: postqueue}
	hops, err := r.route(context.Background(), []string{"partner.example", "a.sub.example", "other.example"}, true)
	if err != nil {
		t.Fatal(err)
	}
	for d, want := range map[string]string{"partner.example": "127.0.0.9:2525", "a.sub.example": "127.0.0.8:25", "other.example": "127.0.0.7:587"} {
		h := hops[d]
		if got := h.Host + ":" + strconv.Itoa(h.Port); got != want || !h.Bracketed {
			t.Errorf("%s: next hop %+v, want [%s]", d, h, want)
		}
	}
}
