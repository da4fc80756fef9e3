package promrules_test

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The files this module reads from the main module.
var (
	rulesPath     = filepath.Join("..", "..", "charts", "totpgate", "files", "alerts.yaml")
	referencePath = filepath.Join("..", "..", "docs", "metrics.md")
	goldenDir     = filepath.Join("..", "..", "cmd", "totpgate", "testdata")
)

// targetLabels are added by Prometheus, not by the binary: the chart's
// ServiceMonitor scrapes through the Prometheus Operator, which attaches
// these to every series of the target.
var targetLabels = map[string]bool{
	"namespace": true, "pod": true, "service": true, "container": true,
	"endpoint": true, "job": true, "instance": true,
}

// metricDoc is one series name the binary exports.
type metricDoc struct {
	typ     string          // counter, gauge, histogram
	labels  map[string]bool // the binary's own labels
	meaning string          // its help text, which names the label values
}

// reference maps each series name a scrape can show (histograms expanded
// to _bucket, _sum and _count) to what docs/metrics.md says of it.
type reference map[string]metricDoc

// readReference parses the table of docs/metrics.md, which
// metrics/reference_test.go generates from the registry the binary uses.
func readReference(path string) (reference, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read metric reference: %w", err)
	}
	ref := reference{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.SplitN(strings.TrimSuffix(strings.TrimPrefix(line, "| "), " |"), " | ", 4)
		if len(cells) != 4 {
			return nil, fmt.Errorf("%s: row with %d cells: %s", path, len(cells), line)
		}
		name := strings.Trim(cells[0], "`")
		labels := map[string]bool{}
		for l := range strings.SplitSeq(cells[2], ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				labels[l] = true
			}
		}
		d := metricDoc{typ: cells[1], labels: labels, meaning: cells[3]}
		if d.typ != "histogram" {
			ref[name] = d
			continue
		}
		bucket := maps.Clone(labels)
		bucket["le"] = true
		ref[name+"_bucket"] = metricDoc{typ: "counter", labels: bucket, meaning: d.meaning}
		ref[name+"_sum"] = metricDoc{typ: "counter", labels: labels, meaning: d.meaning}
		ref[name+"_count"] = metricDoc{typ: "counter", labels: labels, meaning: d.meaning}
	}
	if len(ref) == 0 {
		return nil, fmt.Errorf("%s: no metric rows", path)
	}
	return ref, nil
}

// series is one line of a scrape: the binary's labels, no target labels.
type series struct {
	name    string
	labels  map[string]string
	value   float64
	counter bool
}

// golden is one scrape of the real binary, written by
// cmd/totpgate/metrics_test.go.
type golden []series

func readGolden(name string) (golden, error) {
	f, err := os.Open(filepath.Join(goldenDir, name+".golden"))
	if err != nil {
		return nil, fmt.Errorf("read golden: %w", err)
	}
	defer f.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	mfs, err := parser.TextToMetricFamilies(f)
	if err != nil {
		return nil, fmt.Errorf("parse golden %s: %w", name, err)
	}
	var g golden
	for _, name := range slices.Sorted(maps.Keys(mfs)) {
		mf := mfs[name]
		for _, m := range mf.GetMetric() {
			s := series{name: name, labels: map[string]string{}, counter: mf.GetType() == dto.MetricType_COUNTER}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				s.value = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.value = m.GetGauge().GetValue()
			default:
				return nil, fmt.Errorf("golden %s: %s is a %s; only counters and gauges are handled", name, mf.GetName(), mf.GetType())
			}
			g = append(g, s)
		}
	}
	if len(g) == 0 {
		return nil, fmt.Errorf("golden %s is empty", name)
	}
	return g, nil
}

// checkGolden reports every series of g that docs/metrics.md does not
// describe with the same type and label names: the goldens and the
// reference come from the same registry, so a mismatch means one is stale.
func checkGolden(name string, g golden, ref reference) error {
	var errs []error
	for _, s := range g {
		d, ok := ref[s.name]
		if !ok {
			errs = append(errs, fmt.Errorf("golden %s: %s is not in docs/metrics.md", name, s.name))
			continue
		}
		if (d.typ == "counter") != s.counter {
			errs = append(errs, fmt.Errorf("golden %s: %s is a %s in docs/metrics.md", name, s.name, d.typ))
		}
		if !maps.Equal(d.labels, setOf(slices.Collect(maps.Keys(s.labels)))) {
			errs = append(errs, fmt.Errorf("golden %s: %s has labels %v, docs/metrics.md says %v", name, s.name,
				slices.Sorted(maps.Keys(s.labels)), slices.Sorted(maps.Keys(d.labels))))
		}
	}
	return errors.Join(errs...)
}

// labelValues maps metric → label → the values the goldens show.
type labelValues map[string]map[string]map[string]bool

func (lv labelValues) add(g golden) {
	for _, s := range g {
		if lv[s.name] == nil {
			lv[s.name] = map[string]map[string]bool{}
		}
		for k, v := range s.labels {
			if lv[s.name][k] == nil {
				lv[s.name][k] = map[string]bool{}
			}
			lv[s.name][k][v] = true
		}
	}
}

func setOf(xs []string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}
