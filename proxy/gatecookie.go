package proxy

import (
	"net/http"

	"github.com/totpgate/totpgate/internal/gatecookie"
)

// The gate's own cookies (internal/gatecookie): every name starts with
// GateCookiePrefix, and stripGateCookies keeps all of them from the app.
const (
	// GateCookiePrefix starts the name of every cookie of the gate.
	GateCookiePrefix = gatecookie.Prefix
	// DeviceCookie holds a trusted device's token (__Host-totpgate-device).
	DeviceCookie = gatecookie.Device
)

// stripGateCookies removes every cookie named GateCookiePrefix* from a
// request on its way to the app: the rewrite shared by the pass-through
// and the login gate calls it, and the identity calls do the same
// (identity.Introspector). A request without one costs a substring search.
func stripGateCookies(h http.Header) { gatecookie.Strip(h) }
