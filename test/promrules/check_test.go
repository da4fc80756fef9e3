package promrules_test

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// promqlParser accepts what a Prometheus server started without feature
// flags accepts: no experimental functions, no UTF-8 names.
var promqlParser = parser.NewParser(parser.Options{})

// known is what the rules are held against: the metrics the binary
// exports and the label values its golden scrapes show.
type known struct {
	ref    reference
	values labelValues
}

// checkRules parses content as Prometheus loads a rule file (rulefmt with
// unknown fields refused, which parses and type-checks every expression
// and template), then holds every selector, matcher and grouping label
// against k. It returns the parsed groups and every problem found.
func checkRules(content []byte, k known) (*rulefmt.RuleGroups, error) {
	groups, errs := rulefmt.Parse(content, false, model.LegacyValidation, promqlParser, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var problems []error
	n := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				problems = append(problems, fmt.Errorf("group %s: recording rule %s: the chart ships alerting rules only", g.Name, r.Record))
				continue
			}
			n++
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil { // rulefmt.Parse has parsed it already
				problems = append(problems, fmt.Errorf("alert %s: %w", r.Alert, err))
				continue
			}
			for _, err := range k.checkExpr(expr) {
				problems = append(problems, fmt.Errorf("alert %s: %w", r.Alert, err))
			}
		}
	}
	if n == 0 {
		problems = append(problems, errors.New("no alerting rules"))
	}
	return groups, errors.Join(problems...)
}

func (k known) checkExpr(expr parser.Expr) []error {
	var errs []error
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			errs = append(errs, k.checkSelector(n)...)
		case *parser.AggregateExpr:
			errs = append(errs, k.checkLabelsExist(n.Grouping, n.Expr)...)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				errs = append(errs, k.checkLabelsExist(n.VectorMatching.MatchingLabels, n.LHS, n.RHS)...)
				errs = append(errs, k.checkLabelsExist(n.VectorMatching.Include, n.LHS, n.RHS)...)
			}
		}
		return nil
	})
	return errs
}

// checkSelector fails a selector whose metric the binary does not export,
// whose matcher names a label the metric does not have, or whose matcher
// value appears neither in a golden scrape nor in the metric's help text
// (which lists the values: "by outcome: passed_code, ...").
func (k known) checkSelector(vs *parser.VectorSelector) []error {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	if name == "" {
		return []error{fmt.Errorf("selector %s names no metric", vs)}
	}
	d, ok := k.ref[name]
	if !ok {
		return []error{fmt.Errorf("metric %s is not exported by totpgate (not in docs/metrics.md)", name)}
	}
	var errs []error
	for _, m := range vs.LabelMatchers {
		if m.Name == labels.MetricName || targetLabels[m.Name] {
			continue
		}
		if !d.labels[m.Name] {
			errs = append(errs, fmt.Errorf("metric %s has no label %q (docs/metrics.md)", name, m.Name))
			continue
		}
		for _, v := range literalValues(m) {
			if !k.values[name][m.Name][v] && !containsWord(d.meaning, v) {
				errs = append(errs, fmt.Errorf("%s{%s}: value %q is in no golden scrape and not in the metric's help text", name, m.Name, v))
			}
		}
	}
	return errs
}

// checkLabelsExist fails a by/on/group_left label that no metric inside
// the expressions carries and Prometheus does not add: such a label
// silently groups everything into one series.
func (k known) checkLabelsExist(names []string, exprs ...parser.Expr) []error {
	if len(names) == 0 {
		return nil
	}
	have := map[string]bool{}
	for l := range targetLabels {
		have[l] = true
	}
	for _, e := range exprs {
		parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
			switch n := node.(type) {
			case *parser.VectorSelector:
				for l := range k.ref[n.Name].labels {
					have[l] = true
				}
			case *parser.Call:
				// label_replace and label_join make their first string argument.
				if (n.Func.Name == "label_replace" || n.Func.Name == "label_join") && len(n.Args) > 1 {
					if s, ok := n.Args[1].(*parser.StringLiteral); ok {
						have[s.Val] = true
					}
				}
			}
			return nil
		})
	}
	var errs []error
	for _, l := range names {
		if !have[l] {
			errs = append(errs, fmt.Errorf("label %q is on no metric the expression selects", l))
		}
	}
	return errs
}

var alternation = regexp.MustCompile(`^[A-Za-z0-9_]+(\|[A-Za-z0-9_]+)*$`)

// literalValues returns the label values a matcher names outright: the
// value of = and !=, the branches of a regex made only of a|b|c. Other
// patterns are not checked.
func literalValues(m *labels.Matcher) []string {
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		if m.Value == "" {
			return nil
		}
		return []string{m.Value}
	default:
		if alternation.MatchString(m.Value) {
			return strings.Split(m.Value, "|")
		}
		return nil
	}
}

func containsWord(text, word string) bool {
	return slices.ContainsFunc(strings.FieldsFunc(text, func(r rune) bool {
		return r != '_' && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9')
	}), func(w string) bool { return w == word })
}
