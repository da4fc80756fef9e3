package proxy

import (
	"net/http"

	"github.com/totpgate/totpgate/internal/gatecookie"
)

// StepUpCookie is the gate's own cookie holding the step-up proof: a
// __Host- cookie (Secure, Path=/, no Domain), HttpOnly and SameSite=Lax.
// Like every cookie whose name starts with __Host-totpgate-, it is the
// gate's and never reaches the app.
const StepUpCookie = gatecookie.StepUp

// proofIn is the step-up proof r presents ("" for none). Only one proof is
// ever set (the latest), so a request that sends the cookie twice has no
// proof.
func proofIn(r *http.Request) string { return gatecookie.Value(r, StepUpCookie) }
