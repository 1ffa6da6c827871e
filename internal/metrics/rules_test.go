package metrics

import (
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/tlsgate/tlsgate/internal/discovery"
)

// TestAlertRules reads deploy/prometheus/tlsgate.rules.yml as Prometheus
// would load it (groups of rules with alert, expr, labels, annotations;
// without promtool) and checks that every tlsgate metric an expression
// names is one tlsgate exports, so that no alert waits on a metric that
// never comes.
func TestAlertRules(t *testing.T) {
	data, err := os.ReadFile("../../deploy/prometheus/tlsgate.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&file); err != nil {
		t.Fatalf("tlsgate.rules.yml: %v", err)
	}
	exported := exportedNames(t)
	metricRE := regexp.MustCompile(`\btlsgate_[a-z0-9_]+`)
	alerts := map[string]bool{}
	n := 0
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			n++
			if r.Alert == "" || r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("group %s: rule %+v lacks alert, expr, labels.severity or annotations.summary", g.Name, r)
			}
			if alerts[r.Alert] {
				t.Errorf("alert %s is defined twice", r.Alert)
			}
			alerts[r.Alert] = true
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for: %q: %v", r.Alert, r.For, err)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
			for _, name := range metricRE.FindAllString(r.Expr, -1) {
				if !exported[name] {
					t.Errorf("alert %s names %s, which tlsgate does not export (exported: %s)", r.Alert, name, strings.Join(sortedKeys(exported), ", "))
				}
			}
		}
	}
	for _, want := range []string{"TLSGateMailHeld", "TLSGatePartnerCertExpiresSoon", "TLSGatePartnerProbeFailed", "TLSGateQueueUnreadable"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
	if n < 8 {
		t.Errorf("only %d rules read", n)
	}
}

// exportedNames are the names of the metric families tlsgate serves: the
// descriptions of every collector of Metrics and of the watch's, with a
// histogram's _bucket, _sum and _count series.
func exportedNames(t *testing.T) map[string]bool {
	m := New()
	w := m.AddWatch()
	var cs []prometheus.Collector
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if c, ok := v.Field(i).Interface().(prometheus.Collector); ok {
			cs = append(cs, c)
		}
	}
	cs = append(cs, w.held, w.oldest, w.reads, partnerCollector{w}, newDiscoveryCollector(func() discovery.Stats { return discovery.Stats{} }))
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for _, c := range cs {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		_, histogram := c.(prometheus.Histogram)
		if _, ok := c.(*prometheus.HistogramVec); ok {
			histogram = true
		}
		for d := range ch {
			n := fqName.FindStringSubmatch(d.String())
			if n == nil {
				t.Fatalf("cannot read the name of %s", d)
			}
			names[n[1]] = true
			if histogram {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[n[1]+s] = true
				}
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("only %d metric names found: %v", len(names), names)
	}
	return names
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		if strings.HasPrefix(k, "tlsgate_") {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
