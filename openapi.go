// Package totpgate holds the contract of the totpgate sidecar: openapi.yaml,
// embedded so the binary serves the exact file it was built from.
package totpgate

import _ "embed"

//go:embed openapi.yaml
var spec []byte

// OpenAPISpec returns openapi.yaml as written.
func OpenAPISpec() []byte { return spec }
