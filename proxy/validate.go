package proxy

import (
	"errors"
	"fmt"
	"github.com/totpgate/totpgate/gen"
	"net/http"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/totpgate/totpgate/problem"
)

// Validator checks requests to the sidecar's own routes against openapi.yaml
// before any handler sees them. It never wraps the pass-through: a validator
// on the catch-all would 404 the app.
type Validator struct {
	router       routers.Router
	maxBodyBytes int64
}

// NewValidator compiles the router once. The document's servers are dropped
// so routes match whatever host and port the sidecar is reached on.
func NewValidator(doc *openapi3.T, maxBodyBytes int64) (*Validator, error) {
	d := *doc
	d.Servers = nil
	for _, item := range d.Paths.Map() {
		for _, op := range item.Operations() {
			op.Servers = nil
		}
		item.Servers = nil
	}
	r, err := legacy.NewRouter(&d)
	if err != nil {
		return nil, fmt.Errorf("proxy: build validation router: %w", err)
	}
	return &Validator{router: r, maxBodyBytes: maxBodyBytes}, nil
}

// Wrap validates each request, answering 400/404/405/413/415 problem+json
// and never calling next for a request that breaks the spec.
func (v *Validator) Wrap(next http.Handler) http.Handler {
	opts := &openapi3filter.Options{
		MultiError: true,
		// Authentication is the handlers' job (admin bearer, app session);
		// the validator only checks shape.
		AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, params, err := v.router.FindRoute(r)
		switch {
		case errors.Is(err, routers.ErrMethodNotAllowed):
			problem.Write(w, r, problem.New(http.StatusMethodNotAllowed, gen.ProblemCodeMethodNotAllowed, "This method is not allowed on this path."))
			return
		case err != nil:
			problem.Write(w, r, problem.New(http.StatusNotFound, gen.ProblemCodeNotFound, "No such endpoint."))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, v.maxBodyBytes)
		}
		in := &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts}
		if err := openapi3filter.ValidateRequest(r.Context(), in); err != nil {
			problem.Write(w, r, validationProblem(err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// validationProblem turns kin-openapi's errors into a problem that names
// every bad field. kin-openapi's reasons never quote the offending value,
// so a mistyped code is not echoed back.
func validationProblem(err error) problem.Details {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return problem.New(http.StatusRequestEntityTooLarge, gen.ProblemCodeBadRequest, fmt.Sprintf("The request body is larger than %d bytes.", tooBig.Limit))
	}
	var fields []problem.FieldError
	collectFieldErrors(err, &fields)
	for _, f := range fields {
		if f.Field == "body" && strings.Contains(f.Message, "Content-Type") {
			p := problem.New(http.StatusUnsupportedMediaType, gen.ProblemCodeUnsupportedMediaType, f.Message)
			p.Errors = fields
			return p
		}
	}
	p := problem.New(http.StatusBadRequest, gen.ProblemCodeValidationFailed, "The request does not match the API description: "+summary(fields))
	p.Errors = fields
	return p
}

func summary(fields []problem.FieldError) string {
	names := make([]string, 0, len(fields))
	for _, f := range fields {
		names = append(names, f.Field)
	}
	return "check " + strings.Join(names, ", ") + "."
}

func collectFieldErrors(err error, out *[]problem.FieldError) {
	// A RequestError wraps a MultiError of schema errors, so look for the
	// RequestError before unwrapping a MultiError of them.
	var re *openapi3filter.RequestError
	if multi, ok := err.(openapi3.MultiError); ok {
		for _, e := range multi {
			collectFieldErrors(e, out)
		}
		return
	}
	if !errors.As(err, &re) {
		*out = append(*out, problem.FieldError{Field: "request", Message: "invalid request"})
		return
	}
	field := "body"
	if re.Parameter != nil {
		field = re.Parameter.In + "." + re.Parameter.Name
	}
	var inner openapi3.MultiError
	if errors.As(re.Err, &inner) {
		for _, e := range inner {
			*out = append(*out, schemaFieldError(field, e, re))
		}
		return
	}
	*out = append(*out, schemaFieldError(field, re.Err, re))
}

func schemaFieldError(field string, err error, re *openapi3filter.RequestError) problem.FieldError {
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		if ptr := se.JSONPointer(); len(ptr) > 0 {
			field += "." + strings.Join(ptr, ".")
		}
		return problem.FieldError{Field: field, Message: se.Reason}
	}
	msg := re.Reason
	if msg == "" && err != nil {
		msg = err.Error()
	}
	if msg == "" {
		msg = "invalid"
	}
	return problem.FieldError{Field: field, Message: msg}
}
