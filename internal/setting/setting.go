// Package setting names a bad setting, so that a library's own check of
// its settings (vaultkeys.Open, audit.NewWebhook) and the configuration
// file's check share one set of rules: the library says which setting is
// wrong and why, the configuration adds the path it is known by there.
package setting

import (
	"fmt"
	"net/url"
)

// Error is one bad setting, named by its last path segment as the
// configuration file spells it ("address", "timeout", ...).
type Error struct {
	Name string
	Err  error
}

func (e Error) Error() string { return e.Name + ": " + e.Err.Error() }
func (e Error) Unwrap() error { return e.Err }

// Errors collects Error values.
type Errors []Error

// Add records that setting name is wrong, with a formatted reason.
func (es *Errors) Add(name, format string, args ...any) {
	*es = append(*es, Error{Name: name, Err: fmt.Errorf(format, args...)})
}

// IsHTTPURL reports whether s is an absolute http or https URL with a host.
func IsHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
