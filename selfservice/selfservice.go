// Package selfservice serves the optional self-service page at the user
// API prefix ({prefix}/): a user logged in to the app sees their
// second-factor status, enrolls (QR code and secret as text), confirms,
// gets recovery codes once (copy, download), regenerates them, turns MFA
// off and manages trusted devices (trusts this browser with a code, lists
// the devices with this browser marked, revokes one, signs out every other
// one; hidden where the feature is off). It is plain HTML, CSS and JS embedded in the binary, with no
// third-party code, a strict Content-Security-Policy, and it uses only the
// public API, like any other client.
package selfservice

import (
	"embed"
	"github.com/totpgate/totpgate/gen"
	"io/fs"
	"net/http"
	"strings"

	"github.com/totpgate/totpgate/problem"
)

//go:embed assets
var assets embed.FS

// csp allows only this page's own script and style, the QR code as a data
// URL, and calls to its own origin; nothing may frame it.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// Mount serves the page at prefix+"/" and its files under prefix+"/assets/",
// and hands every other request to api. prefix is the path the API sees
// (the spec's /mfa).
func Mount(prefix string, api http.Handler) http.Handler {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // embedded at build time
	}
	files := http.StripPrefix(prefix+"/assets/", http.FileServer(http.FS(sub)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page := r.URL.Path == prefix+"/"
		asset := strings.HasPrefix(r.URL.Path, prefix+"/assets/") && r.URL.Path != prefix+"/assets/"
		if !page && !asset {
			api.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			problem.Write(w, r, problem.New(http.StatusMethodNotAllowed, gen.ProblemCodeMethodNotAllowed, "The self-service page only answers GET."))
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if page {
			h.Set("Cache-Control", "no-store")
			h.Set("Content-Type", "text/html; charset=utf-8")
			b, _ := fs.ReadFile(sub, "index.html")
			_, _ = w.Write(b)
			return
		}
		files.ServeHTTP(w, r)
	})
}
