package gen_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"gopkg.in/yaml.v3"

	"github.com/totpgate/totpgate/gen"
)

const specFile = "../openapi.yaml"

// problemExceptions lists the error answers that are deliberately not
// application/problem+json: /readyz answers 503 with the same Readiness body
// as its 200, because probes and operators read one shape.
var problemExceptions = map[string]bool{
	"GET /readyz 503": true,
}

func loadFile(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile(specFile)
	if err != nil {
		t.Fatalf("load %s: %v", specFile, err)
	}
	return doc
}

func loadEmbedded(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := gen.GetSwagger()
	if err != nil {
		t.Fatalf("GetSwagger: %v", err)
	}
	return doc
}

func TestSpecsValidate(t *testing.T) {
	t.Parallel()
	for name, load := range map[string]func(*testing.T) *openapi3.T{
		"file":     loadFile,
		"embedded": loadEmbedded,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if err := load(t).Validate(context.Background()); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

// TestEmbeddedSpecIsCurrent fails when openapi.yaml was edited without
// running `go generate ./gen/`.
func TestEmbeddedSpecIsCurrent(t *testing.T) {
	t.Parallel()
	file, err := json.Marshal(loadFile(t))
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := json.Marshal(loadEmbedded(t))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, embedded) {
		t.Fatalf("the embedded spec differs from %s: run `go generate ./gen/`", specFile)
	}
}

type operation struct {
	key string // "METHOD /path"
	op  *openapi3.Operation
}

func operations(doc *openapi3.T) []operation {
	var ops []operation
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			ops = append(ops, operation{key: method + " " + path, op: op})
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].key < ops[j].key })
	return ops
}

func isJSON(mediaType string) bool {
	return mediaType == "application/json" || strings.HasSuffix(mediaType, "+json")
}

// hasExample reports whether a media type carries an example, on itself or
// on its schema (for a $ref, the referenced schema).
func hasExample(mt *openapi3.MediaType) bool {
	if mt.Example != nil || len(mt.Examples) > 0 {
		return true
	}
	return mt.Schema != nil && mt.Schema.Value != nil && mt.Schema.Value.Example != nil
}

func TestOperationsFollowConventions(t *testing.T) {
	t.Parallel()
	doc := loadFile(t)
	ops := operations(doc)
	if len(ops) == 0 {
		t.Fatal("no operations")
	}
	seen := map[string]string{}
	for _, o := range ops {
		t.Run(o.key, func(t *testing.T) {
			op := o.op
			if op.OperationID == "" {
				t.Error("no operationId")
			} else if other, dup := seen[op.OperationID]; dup {
				t.Errorf("operationId %q also used by %s", op.OperationID, other)
			}
			seen[op.OperationID] = o.key
			if op.Summary == "" || op.Description == "" {
				t.Error("summary and description are required")
			}
			if len(op.Tags) == 0 {
				t.Error("no tags")
			}
			if op.Security == nil {
				t.Error("no security requirement; use `security: []` for none")
			}

			if rb := op.RequestBody; rb != nil {
				if len(rb.Value.Content) == 0 {
					t.Error("request body without content")
				}
				for mtName, mt := range rb.Value.Content {
					if !hasExample(mt) {
						t.Errorf("request body %s: no example", mtName)
					}
				}
			}

			if op.Responses == nil || op.Responses.Len() == 0 {
				t.Fatal("no responses")
			}
			for status, resp := range op.Responses.Map() {
				code, err := strconv.Atoi(status)
				if err != nil {
					t.Errorf("response %q: use explicit status codes", status)
					continue
				}
				r := resp.Value
				if r.Description == nil || *r.Description == "" {
					t.Errorf("response %s: no description", status)
				}
				for mtName, mt := range r.Content {
					if isJSON(mtName) && !hasExample(mt) {
						t.Errorf("response %s %s: no example", status, mtName)
					}
				}
				if code >= 400 && !problemExceptions[o.key+" "+status] {
					if len(r.Content) != 1 || r.Content.Get("application/problem+json") == nil {
						t.Errorf("response %s: must have exactly application/problem+json content, has %v", status, mediaTypes(r.Content))
					}
				}
			}
		})
	}
}

func mediaTypes(c openapi3.Content) []string {
	var out []string
	for k := range c {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestProblemExceptionsExist keeps problemExceptions from outliving the
// answers it excuses.
func TestProblemExceptionsExist(t *testing.T) {
	t.Parallel()
	doc := loadFile(t)
	for key := range problemExceptions {
		f := strings.Fields(key) // METHOD PATH STATUS
		item := doc.Paths.Find(f[1])
		if item == nil || item.GetOperation(f[0]) == nil || item.GetOperation(f[0]).Responses.Value(f[2]) == nil {
			t.Errorf("exception %q names no response", key)
		}
	}
}

// TestEveryComponentIsReferenced stands in for Redocly's
// no-unused-components rule (turned off in .redocly.yaml): that rule does
// not count references from the root x-totpgate-*-responses extensions,
// which list the answers given on routes this document has no path for.
func TestEveryComponentIsReferenced(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(specFile)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		t.Fatal(err)
	}
	refs := map[string]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.AliasNode {
			walk(n.Alias)
			return
		}
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 && c.Value == "$ref" {
				refs[n.Content[i+1].Value] = true
			}
			walk(c)
		}
	}
	walk(&root)

	var doc struct {
		Components map[string]map[string]any `yaml:"components"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for kind, comps := range doc.Components {
		if kind == "securitySchemes" { // used by name in security requirements
			continue
		}
		for name := range comps {
			if ref := "#/components/" + kind + "/" + name; !refs[ref] {
				t.Errorf("%s is never referenced", ref)
			}
		}
	}
}
