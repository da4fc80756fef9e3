//go:build !unix

package proxy

// Without a non-blocking peek an idle connection cannot be checked for a
// stray answer, so NewUpstreamClient leaves everything to http.Transport.
const peekSupported = false

func (pc *upConn) quiet() bool { return false }
