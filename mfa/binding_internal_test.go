package mfa

import (
	"strings"
	"testing"

	"github.com/totpgate/totpgate/store"
)

// TestInternalBindingsStayOutOfTheUserNamespace: every keyring binding of
// the sidecar's own material must not start with the users' prefix, or a
// user id could name it.
func TestInternalBindingsStayOutOfTheUserNamespace(t *testing.T) {
	for _, b := range []string{PepperBinding, revokeBinding("alice"), revokeBinding(store.UserBindingPrefix + "alice")} {
		if strings.HasPrefix(b, store.UserBindingPrefix) {
			t.Errorf("internal binding %q is in the user namespace", b)
		}
	}
}
