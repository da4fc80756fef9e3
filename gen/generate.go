// Package gen holds the code generated from ../openapi.yaml by oapi-codegen:
// models, a net/http server with its strict wrapper, a client, and the
// embedded spec. Do not edit totpgate.gen.go; edit openapi.yaml and run
// `go generate ./gen/`.
package gen

//go:generate go tool oapi-codegen -config oapi-codegen.yaml ../openapi.yaml
