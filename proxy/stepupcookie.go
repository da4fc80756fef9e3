package proxy

import (
	"net/http"
	"strings"
	"time"
)

// StepUpCookie is the gate's own cookie holding the step-up proof: a
// __Host- cookie (Secure, Path=/, no Domain), HttpOnly and SameSite=Lax.
// Like every cookie whose name starts with __Host-totpgate-, it is the
// gate's and never reaches the app.
const StepUpCookie = "__Host-totpgate-step-up"

// ProofCookie is the Set-Cookie value that hands a step-up proof to the
// client for maxAge.
func ProofCookie(proof string, maxAge time.Duration) string {
	return (&http.Cookie{
		Name: StepUpCookie, Value: proof, Path: "/", MaxAge: int(maxAge / time.Second),
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	}).String()
}

// proofIn is the step-up proof r presents ("" for none). Only one proof is
// ever set (the latest), so a request that sends the cookie twice has no
// proof.
func proofIn(r *http.Request) string {
	cs := r.CookiesNamed(StepUpCookie)
	if len(cs) != 1 {
		return ""
	}
	return cs[0].Value
}

// gateCookie reports a cookie of the gate's own (the __Host-totpgate-
// prefix), which a held request does not keep.
func gateCookie(name string) bool { return strings.HasPrefix(name, "__Host-totpgate-") }
