package policy

import "crypto/sha256"

// unit is one file compiled on its own: the main file (its settings, the
// include patterns and its endpoints) or an included file (endpoints
// only). Its endpoints are complete but for what depends on other files
// (the index, exceptions, nesting), and never change afterwards: a policy
// assembled from units shares them, and so does the next one when the
// file did not change.
type unit struct {
	file string
	key  string            // file, or file#LINE for a piece (see split)
	sum  [sha256.Size]byte // of the content compiled
	main bool
	ctx  unitCtx // the endpoints were compiled on this

	// The main file only.
	mta            MTA
	postfixVersion string
	settings       Settings
	lines          map[string]int // see Policy.Line
	includes       []includePattern

	eps []*Endpoint // those without problems, in file order
	ids []int32     // eps[k]'s ID (Policy.byID), given when the unit is first used
	// at[k] is where eps[k]'s lines start in lines: in lineTab the lines of its name,
	// hosts key, exception_to and expires, then of each of its hosts (see
	// the line* constants), for problems found once all files are known.
	at       []int32
	lineTab  []int32
	exc      map[int32]*rawException // eps[k]'s exception as read, if any
	sizes    indexSizes              // the host patterns of eps, by kind
	asks     bool                    // an endpoint needs the client's certificate and lists a name (Policy.AsksEveryClient)
	problems []*Problem
	warnings []warning
}

// Positions in an endpoint's lines (unit.at).
const (
	lineName = iota
	lineHostsKey
	lineExceptionTo
	lineExpires
	lineHosts // the first host's line; one per host
)

// includePattern is one entry of the main file's include list.
type includePattern struct {
	pattern string
	line    int
}

// unitCtx is what compiling endpoints depends on besides their own file:
// the main file's settings they are checked against and rendered with.
// An included file is compiled again when it changes.
type unitCtx struct {
	mta            MTA
	postfixVersion string
	trustAnchorDir string
	delegation     bool // [policyd] delegation_listen is set
}

// context returns the main file's settings as endpoints see them.
func (u *unit) context() unitCtx {
	return unitCtx{mta: u.mta, postfixVersion: u.postfixVersion, trustAnchorDir: u.settings.TrustAnchorDir, delegation: u.settings.Delegation.Addr != ""}
}

// line returns line i (a line* constant) of endpoint k.
func (u *unit) line(k int32, i int) int { return int(u.lineTab[int(u.at[k])+i]) }

// hostLine returns the line of endpoint k's j-th host.
func (u *unit) hostLine(k int32, j int) int { return u.line(k, lineHosts+j) }
