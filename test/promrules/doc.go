// Package promrules holds only tests: the chart's alert rules
// (charts/totpgate/files/alerts.yaml) parsed and type-checked by
// Prometheus's own rule and PromQL parsers, every selector held against the
// metrics the binary exports (docs/metrics.md, generated from the registry,
// and the golden scrapes of the real binary in cmd/totpgate/testdata), and
// each alert evaluated by Prometheus's rule engine over series built from
// those golden scrapes. It is a module of its own so the Prometheus server's
// dependency tree stays out of the project's go.mod.
package promrules
