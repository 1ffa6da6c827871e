package discovery

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/tlsgate/tlsgate/internal/discovery/mtasts"
)

// The cache file is JSON lines: a header line, then one line per domain.
// Times are Unix seconds. A field added later is optional, so that files
// written before it are still read: dane_all_mx (whether every MX host has
// usable DANE) is written for usable DANE; where it is missing, not every
// MX host counts as usable (the stricter answer) and the domain's DANE is
// evaluated again on its next lookup.

const cacheFormat = "tlsgate-discovery-cache/1"

type fileHeader struct {
	Format string `json:"format"`
	Saved  int64  `json:"saved"`
}

type fileEntry struct {
	Domain      string      `json:"domain"`
	Used        int64       `json:"used,omitempty"`
	DANE        string      `json:"dane,omitempty"`
	DANEChecked int64       `json:"dane_checked,omitempty"`
	DANEExpires int64       `json:"dane_expires,omitempty"`
	DANEUsable  int64       `json:"dane_usable,omitempty"`
	DANEAllMX   *bool       `json:"dane_all_mx,omitempty"`
	DANEReason  string      `json:"dane_reason,omitempty"`
	TXTID       string      `json:"txt_id,omitempty"`
	TXTChecked  int64       `json:"txt_checked,omitempty"`
	TXTExpires  int64       `json:"txt_expires,omitempty"`
	Policy      *filePolicy `json:"policy,omitempty"`
	STSError    string      `json:"sts_error,omitempty"`
	RetryAfter  int64       `json:"retry_after,omitempty"`
	FailedID    string      `json:"failed_id,omitempty"`
}

type filePolicy struct {
	ID      string   `json:"id"`
	Mode    string   `json:"mode"`
	MX      []string `json:"mx,omitempty"`
	MaxAge  uint32   `json:"max_age"`
	Fetched int64    `json:"fetched"`
	Expires int64    `json:"expires"`
	Refetch int64    `json:"refetch"`
}

// Save writes the cache to cfg.CacheFile atomically: a temporary file in
// the same directory (mode 0600), synced, renamed over the old one. It
// does nothing without a cache file.
func (d *Discoverer) Save() error {
	if d.cfg.CacheFile == "" {
		return nil
	}
	d.saveMu.Lock()
	defer d.saveMu.Unlock()
	d.dirty.Store(false)
	d.mu.RLock()
	es := make([]*entry, 0, len(d.entries))
	for _, e := range d.entries {
		es = append(es, e)
	}
	d.mu.RUnlock()
	if err := d.writeFile(es); err != nil {
		d.dirty.Store(true)
		return fmt.Errorf("discovery: save cache %s: %w", d.cfg.CacheFile, err)
	}
	return nil
}

func (d *Discoverer) writeFile(es []*entry) error {
	path := d.cfg.CacheFile
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	w := bufio.NewWriterSize(tmp, 64<<10)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(fileHeader{Format: cacheFormat, Saved: d.now().Unix()}); err != nil {
		tmp.Close()
		return err
	}
	for _, e := range es {
		if err := enc.Encode(toFile(e.key, e.lastUsed(), e.rec.Load())); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if df, err := os.Open(dir); err == nil {
		df.Sync()
		df.Close()
	}
	return nil
}

func toFile(key string, used int64, rec *record) fileEntry {
	fe := fileEntry{
		Domain: key, Used: used,
		DANEChecked: rec.daneChecked.unix(), DANEExpires: rec.daneExpires.unix(), DANEUsable: rec.daneUsable.unix(), DANEReason: rec.daneReason,
		TXTID: rec.txtID(), TXTChecked: rec.txtChecked.unix(), TXTExpires: rec.txtExpires.unix(),
		STSError: rec.stsErr(), RetryAfter: rec.retryAfter(), FailedID: rec.failedID(),
	}
	if rec.dane != DANEOff {
		fe.DANE = rec.dane.String()
	}
	if rec.dane == DANEUsable && rec.daneFlags&daneAllMXUnread == 0 {
		all := rec.allMX()
		fe.DANEAllMX = &all
	}
	if p := rec.policy(); p != nil {
		fe.Policy = &filePolicy{ID: p.id, Mode: p.policy.Mode.String(), MX: p.policy.MX, MaxAge: p.policy.MaxAge,
			Fetched: p.fetched, Expires: p.expires, Refetch: p.refetch}
	}
	return fe
}

// load reads cfg.CacheFile. A missing file is no error. A file that
// cannot be parsed is renamed to <file>.bad (nothing is lost) and the
// cache starts empty; the error says so.
func (d *Discoverer) load() error {
	path := d.cfg.CacheFile
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("discovery: load cache: %w", err)
	}
	entries, bytes, err := d.parseFile(f)
	f.Close()
	if err != nil {
		bad := path + ".bad"
		if rerr := os.Rename(path, bad); rerr != nil {
			return fmt.Errorf("discovery: cache file %s: %v; starting with an empty cache (could not move it aside: %v)", path, err, rerr)
		}
		return fmt.Errorf("discovery: cache file %s: %v; moved to %s, starting with an empty cache", path, err, bad)
	}
	d.mu.Lock()
	d.entries, d.bytes = entries, bytes
	d.mu.Unlock()
	d.evict()
	return nil
}

func (d *Discoverer) parseFile(r io.Reader) (map[string]*entry, int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, 0, err
		}
		return nil, 0, errors.New("empty file")
	}
	var h fileHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil || h.Format != cacheFormat {
		return nil, 0, fmt.Errorf("line 1: not a %s header", cacheFormat)
	}
	now := d.now().Unix()
	horizon := int64(d.cfg.RefreshHorizon.Seconds())
	entries := map[string]*entry{}
	var total int64
	line := 1
	for sc.Scan() {
		line++
		var fe fileEntry
		if err := json.Unmarshal(sc.Bytes(), &fe); err != nil {
			return nil, 0, fmt.Errorf("line %d: %v", line, err)
		}
		key, err := BareDomain(fe.Domain)
		if err != nil || key != fe.Domain {
			return nil, 0, fmt.Errorf("line %d: bad domain %q", line, fe.Domain)
		}
		rec, err := fromFile(fe)
		if err != nil {
			return nil, 0, fmt.Errorf("line %d (%s): %v", line, key, err)
		}
		rec.gen = d.gen.Load()
		d.finish(rec, now)
		if rec.daneFlags&daneAllMXUnread != 0 {
			// Answered as "not every MX host" until the background
			// refresh that the next lookup starts knows better.
			rec.refreshAt = 0
		}
		// Drop what is worth nothing any more: nothing valid and not used
		// recently.
		polValid := rec.policy() != nil && now < rec.policy().expires
		daneValid := rec.dane != DANEOff && now < rec.daneExpires.unix()
		if !polValid && !daneValid && now >= rec.fresh.unix() && now-fe.Used > horizon {
			continue
		}
		e := &entry{key: key}
		e.rec.Store(rec)
		e.setUsed(fe.Used)
		entries[key] = e
		total += rec.size(key)
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("line %d: %w", line+1, err)
	}
	return entries, total, nil
}

func fromFile(fe fileEntry) (*record, error) {
	rec := &record{
		daneChecked: u32(fe.DANEChecked), daneExpires: u32(fe.DANEExpires), daneUsable: u32(fe.DANEUsable), daneReason: intern(fe.DANEReason),
		txtChecked: u32(fe.TXTChecked), txtExpires: u32(fe.TXTExpires),
	}
	var pol *policyRec
	switch fe.DANE {
	case "":
	case "none":
		rec.dane = DANENone
	case "usable":
		rec.dane = DANEUsable
		switch {
		case fe.DANEAllMX == nil:
			rec.daneFlags = daneAllMXUnread
		case *fe.DANEAllMX:
			rec.daneFlags = daneAllMX
		}
	default:
		return nil, fmt.Errorf("dane %q", fe.DANE)
	}
	if fp := fe.Policy; fp != nil {
		mode, err := mtasts.ParseMode(fp.Mode)
		if err != nil {
			return nil, err
		}
		// Re-check the patterns as the parser would.
		var body []byte
		p := &mtasts.Policy{Mode: mode, MaxAge: min(fp.MaxAge, mtasts.MaxMaxAge)}
		body = []byte(p.String())
		for _, m := range fp.MX {
			body = append(body, "mx: "+m+"\n"...)
		}
		parsed, err := mtasts.ParsePolicy(body)
		if err != nil {
			return nil, fmt.Errorf("policy: %v", err)
		}
		if len(parsed.Dropped) > 0 {
			return nil, fmt.Errorf("policy: bad mx %v", parsed.Dropped)
		}
		pol = &policyRec{id: fp.ID, policy: parsed, answer: parsed.Answer(),
			fetched: fp.Fetched, expires: fp.Expires, refetch: fp.Refetch}
		if pol.id == fe.TXTID {
			pol.id = fe.TXTID // one copy of the id
		}
	}
	rec.setSTS(fe.TXTID, pol, fe.STSError, fe.RetryAfter, fe.FailedID)
	return rec, nil
}
