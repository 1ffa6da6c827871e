package posture

import (
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"
)

// LevelColors are the timeline colours per level (also the legend's), so
// that a plaintext day is red and a verified one dark green at a glance.
var LevelColors = map[string]string{
	"plaintext": "#d62728",
	"anonymous": "#ff7f0e",
	"untrusted": "#e8c21a",
	"trusted":   "#98d98e",
	"verified":  "#2ca02c",
	"unknown":   "#9e9e9e",
}

// maxTimelineDays bounds each peer's timeline on the page.
const maxTimelineDays = 62

type htmlRow struct {
	P        *PeerReport
	Trust    string
	Versions string
	Policy   string
	Status   string // sort key of the policy column
	Last     string
	LastUnix int64
	Cells    []htmlCell
}

type htmlCell struct {
	Day   string
	Total int
	Segs  []htmlSeg
}

type htmlSeg struct {
	Level  string
	Count  int
	Height int // percent
}

// WriteHTML writes the report as one self-contained page: inline CSS and
// JavaScript, no external resources. The table sorts by any column on a
// click; each row has a timeline of its sessions per day, coloured by
// trust level.
func (r *Report) WriteHTML(w io.Writer) error {
	// The timeline spans the report's last days with sessions.
	var last time.Time
	for i := range r.Peers {
		if l := r.Peers[i].LastSeen; l != nil && l.After(last) {
			last = *l
		}
	}
	var days []string
	if !last.IsZero() {
		var first time.Time
		for i := range r.Peers {
			if f := r.Peers[i].FirstSeen; f != nil && (first.IsZero() || f.Before(first)) {
				first = *f
			}
		}
		start := last.Truncate(24*time.Hour).AddDate(0, 0, -(maxTimelineDays - 1))
		if first.After(start) {
			start = first.Truncate(24 * time.Hour)
		}
		for d := start; !d.After(last); d = d.AddDate(0, 0, 1) {
			days = append(days, d.Format("2006-01-02"))
		}
	}
	var rows []htmlRow
	for i := range r.Peers {
		p := &r.Peers[i]
		row := htmlRow{P: p, Trust: trustMix(p.Trust), Versions: joinKeys(p.TLSVersions), Policy: policyCell(p), Last: "-"}
		switch {
		case p.Judgement != nil:
			row.Status = "1 covered"
		case p.Proposal != nil:
			row.Status = "2 " + p.Proposal.Status
		default:
			row.Status = "3"
		}
		if p.LastSeen != nil {
			row.Last, row.LastUnix = p.LastSeen.Format("2006-01-02 15:04"), p.LastSeen.Unix()
		}
		byDay := map[string]Day{}
		for _, d := range p.Timeline {
			byDay[d.Day] = d
		}
		for _, d := range days {
			cell := htmlCell{Day: d}
			dd := byDay[d]
			for lv := 0; lv < nLevels; lv++ {
				cell.Total += dd.count(lv)
			}
			for lv := 0; lv < nLevels; lv++ {
				if n := dd.count(lv); n > 0 {
					cell.Segs = append(cell.Segs, htmlSeg{Level: levelNames[lv], Count: n, Height: max(1, n*100/cell.Total)})
				}
			}
			row.Cells = append(row.Cells, cell)
		}
		rows = append(rows, row)
	}
	var css strings.Builder
	for _, lv := range levelNames {
		fmt.Fprintf(&css, ".lv-%s{background:%s}\n", lv, LevelColors[lv])
	}
	return pageTmpl.Execute(w, map[string]any{
		"R":      r,
		"Rows":   rows,
		"Levels": levelNames,
		"CSS":    template.CSS(css.String()),
		"Title":  "tlsgate posture " + r.Generated.Format("2006-01-02"),
	})
}

var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{{.Title}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}
.meta{color:#555;margin:.2em 0}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.4em .6em;margin:.3em 0}
table{border-collapse:collapse;margin-top:1em}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:middle;white-space:nowrap}
td.policy{white-space:normal;min-width:18em;max-width:34em}
th{background:#f2f2f2;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \25B2"}
th[aria-sort=descending]::after{content:" \25BC"}
td.num{text-align:right}
.tl{display:flex;gap:1px;height:18px;align-items:flex-end}
.day{width:8px;height:18px;display:flex;flex-direction:column-reverse;background:#f4f4f4}
.seg{width:8px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
{{.CSS}}
</style></head><body>
<h1>TLS posture</h1>
<p class="meta">Generated {{.R.Generated.Format "2006-01-02 15:04 MST"}} from {{len .R.Inputs}} log(s){{if .R.Policy}}; judged with {{.R.Policy}}{{end}}; proposals need &ge; {{.R.Rules.MinSessions}} sessions over &ge; {{.R.Rules.MinDays}} days.</p>
{{range .R.Warnings}}<p class="warn">warning: {{.}}</p>
{{end}}<p class="legend">Sessions per day:{{range .Levels}}<span class="lv-{{.}}"></span>{{.}}{{end}}</p>
<table id="peers"><thead><tr>
<th data-type="text">Direction</th><th data-type="text">Kind</th><th data-type="text">Peer</th>
<th data-type="num">Sessions</th><th data-type="num">Messages</th><th data-type="num">Plaintext</th>
<th data-type="none">Timeline</th><th data-type="text">TLS</th><th data-type="num">Min bits</th><th data-type="text">Trust</th>
<th data-type="num">Last seen</th><th data-type="text">Policy / proposal</th>
</tr></thead><tbody>
{{range .Rows}}<tr class="peer" data-peer="{{.P.Peer}}">
<td>{{.P.Direction}}</td><td>{{.P.Kind}}</td><td>{{.P.Peer}}</td>
<td class="num" data-sort="{{.P.Sessions}}">{{.P.Sessions}}</td><td class="num" data-sort="{{.P.Messages}}">{{.P.Messages}}</td>
<td class="num" data-sort="{{.P.PlaintextSessions}}">{{.P.PlaintextSessions}}</td>
<td><div class="tl">{{range .Cells}}<div class="day" title="{{.Day}}: {{.Total}} session(s)">{{range .Segs}}<div class="seg lv-{{.Level}}" data-level="{{.Level}}" data-count="{{.Count}}" style="height:{{.Height}}%" title="{{.Count}} {{.Level}}"></div>{{end}}</div>{{end}}</div></td>
<td>{{.Versions}}</td><td class="num" data-sort="{{.P.MinBits}}">{{if .P.MinBits}}{{.P.MinBits}}{{else}}-{{end}}</td><td>{{.Trust}}</td>
<td data-sort="{{.LastUnix}}">{{.Last}}</td><td class="policy" data-sort="{{.Status}} {{.Policy}}">{{.Policy}}</td>
</tr>
{{end}}</tbody></table>
<script>
(function(){
  var table=document.getElementById("peers");
  var heads=table.tHead.rows[0].cells;
  function key(row,i,type){
    var c=row.cells[i];var v=c.hasAttribute("data-sort")?c.getAttribute("data-sort"):c.textContent;
    if(type==="num"){var n=parseFloat(v);return isNaN(n)?-1:n;}
    return v.toLowerCase();
  }
  for(var i=0;i<heads.length;i++){(function(i){
    var th=heads[i];var type=th.getAttribute("data-type");if(type==="none")return;
    th.addEventListener("click",function(){
      var dir=th.getAttribute("aria-sort")==="ascending"?-1:1;
      for(var j=0;j<heads.length;j++)heads[j].removeAttribute("aria-sort");
      th.setAttribute("aria-sort",dir===1?"ascending":"descending");
      var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
      rows.sort(function(a,b){var x=key(a,i,type),y=key(b,i,type);return x<y?-dir:x>y?dir:0;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  })(i);}
})();
</script>
</body></html>
`))
