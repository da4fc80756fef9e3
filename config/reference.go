package config

import (
	"fmt"
	"strings"
)

// Reference renders the configuration reference as a Markdown table: one row
// per setting with its YAML path, environment variable, flag, default and
// meaning. The README embeds it, and a test keeps the two identical.
func Reference() string {
	def := Default()
	var b strings.Builder
	b.WriteString("| YAML key | Environment | Flag | Default | Meaning |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, f := range Fields(&def) {
		d := f.String()
		switch {
		case f.Secret:
			d = "(unset)"
		case d == "":
			d = "(empty)"
		}
		fmt.Fprintf(&b, "| `%s` | `%s` | `--%s` | `%s` | %s |\n", f.Path, f.Env, f.Flag, d, f.Doc)
	}
	return b.String()
}

// Redacted renders the effective settings for `check-config`, hiding secrets.
func Redacted(c Config) string {
	var b strings.Builder
	for _, f := range Fields(&c) {
		v := f.String()
		if f.Secret && v != "" {
			v = "(set, hidden)"
		}
		fmt.Fprintf(&b, "%s=%s\n", f.Path, v)
	}
	return b.String()
}
