package posture

import (
	"slices"
	"strings"
	"time"

	"github.com/tlsgate/tlsgate/internal/maillog"
	"github.com/tlsgate/tlsgate/internal/mtapolicy"
	"github.com/tlsgate/tlsgate/internal/verdict"
)

// Direction and Kind name a peer's row.
type (
	// Direction is "inbound" or "outbound".
	Direction string
	// Kind is how a peer is named: "domain" (next-hop domain), "mx" (the
	// server we delivered to), "client" (host[addr] of a client) or
	// "sender" (envelope sender domain).
	Kind string
)

// Directions and kinds.
const (
	Inbound    Direction = "inbound"
	Outbound   Direction = "outbound"
	KindDomain Kind      = "domain"
	KindMX     Kind      = "mx"
	KindClient Kind      = "client"
	KindSender Kind      = "sender"
)

type peerKey struct {
	Dir  Direction
	Kind Kind
	Name string
}

// levels index the per-day counters: plaintext, then the trust levels.
const (
	lvPlain = iota
	lvAnonymous
	lvUntrusted
	lvTrusted
	lvVerified
	lvUnknown
	nLevels
)

var levelNames = [nLevels]string{"plaintext", "anonymous", "untrusted", "trusted", "verified", "unknown"}

func levelOf(t tlsSeen) int {
	if !t.tls {
		if t.trust == maillog.TrustUnknown {
			return lvPlain
		}
		return lvUnknown
	}
	switch t.trust {
	case maillog.Anonymous:
		return lvAnonymous
	case maillog.Untrusted:
		return lvUntrusted
	case maillog.Trusted:
		return lvTrusted
	case maillog.Verified:
		return lvVerified
	}
	return lvUnknown
}

type judgeKey struct {
	tls          bool
	trust        maillog.Trust
	bits         int
	version      string
	client, name string
}

type judged struct {
	res       verdict.Result
	reason    string
	endpoints string
	refuse    bool // the file's own modes refuse (inbound) or hold (outbound)
}

// peer is the collector's per-peer state.
type peer struct {
	key                peerKey
	host, addr, rcpt   string
	port               int
	sessions, messages int
	tlsSessions, plain int
	unlogged           int
	first, last        time.Time
	lastPlain          time.Time
	versions           map[string]int
	ciphers            map[string]int
	bits               map[int]int
	levels             [nLevels]int
	days               map[int32]*[nLevels]int32
	deferred           int
	lastDeferral       string
	logged             map[string]int
	endpoint           []string
	answerText         string
	monitor            bool
	lookupErr          string
	answer             *mtapolicy.Requirement
	covChecked         bool
	cache              map[judgeKey]judged
	judged             [4]int // by verdict.Result
	refused            int
	lastSession        tlsSeen
	lastEndpoints      string
	lastAt             time.Time
	reasons            map[string]int
}

func (c *Collector) peerFor(k peerKey) *peer {
	if p := c.peers[k]; p != nil {
		return p
	}
	p := &peer{key: k}
	c.peers[k] = p
	return p
}

func (p *peer) setClient(name, addr string) {
	if p.addr == "" {
		p.host, p.addr = name, addr
	}
}

// count records one session with tls at t.
func (p *peer) count(tls tlsSeen, t time.Time) {
	p.sessions++
	if p.first.IsZero() || t.Before(p.first) {
		p.first = t
	}
	if t.After(p.last) {
		p.last = t
	}
	if !t.Before(p.lastAt) {
		p.lastSession, p.lastAt = tls, t
	}
	lv := levelOf(tls)
	p.levels[lv]++
	if p.days == nil {
		p.days = map[int32]*[nLevels]int32{}
	}
	day := int32(t.UTC().Unix() / 86400)
	row := p.days[day]
	if row == nil {
		row = new([nLevels]int32)
		p.days[day] = row
	}
	row[lv]++
	if !tls.tls {
		if lv == lvPlain {
			p.plain++
			if t.After(p.lastPlain) {
				p.lastPlain = t
			}
		}
		return
	}
	p.tlsSessions++
	if p.versions == nil {
		p.versions, p.ciphers, p.bits = map[string]int{}, map[string]int{}, map[int]int{}
	}
	p.versions[tls.version]++
	p.ciphers[tls.cipher]++
	p.bits[tls.bits]++
}

func (p *peer) addJudged(r verdict.Result, reason string, refuse bool) {
	p.judged[r]++
	if refuse {
		p.refused++
	}
	if reason != "" && r != verdict.Pass {
		if p.reasons == nil {
			p.reasons = map[string]int{}
		}
		if _, ok := p.reasons[reason]; ok || len(p.reasons) < 8 {
			p.reasons[reason]++
		}
	}
}

func (p *peer) addLogged(result string) {
	if p.logged == nil {
		p.logged = map[string]int{}
	}
	p.logged[result]++
}

func (p *peer) addEndpoints(names string) {
	if names == "" || names == p.lastEndpoints {
		return
	}
	p.lastEndpoints = names
	for _, n := range strings.Split(names, ",") {
		if !slices.Contains(p.endpoint, n) {
			p.endpoint = append(p.endpoint, n)
		}
	}
}

func (p *peer) minBits() int {
	m := 0
	for b := range p.bits {
		if m == 0 || b < m {
			m = b
		}
	}
	return m
}

// lowestVersion returns the oldest protocol seen.
func (p *peer) lowestVersion() string {
	best := ""
	for v := range p.versions {
		if best == "" || versionRank(v) < versionRank(best) {
			best = v
		}
	}
	return best
}

func versionRank(v string) int {
	switch v {
	case "SSLv2":
		return 0
	case "SSLv3":
		return 1
	case "TLSv1":
		return 2
	case "TLSv1.1":
		return 3
	case "TLSv1.2":
		return 4
	case "TLSv1.3":
		return 5
	}
	return -1
}
