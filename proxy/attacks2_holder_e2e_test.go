package proxy_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The Basic-auth fix covers only "as bearer": with a credential presented
// as header:Authorization (JWT-in-Authorization-response-header apps), the
// holder lookup presents the client's own Authorization (Basic alice:pw)
// and the app says "alice": her new token passes as "renewed".
func TestAttack2HolderBasicViaHeaderAuthorization(t *testing.T) {
	app := http.NewServeMux()
	app.HandleFunc("/api/me", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); ok && u == "alice" && p == "pw" || r.Header.Get("Authorization") == "Bearer S-alice" {
			io.WriteString(w, `{"id":"alice"}`)
			return
		}
		w.WriteHeader(401)
	})
	app.HandleFunc("/api/token", func(w http.ResponseWriter, r *http.Request) { // an unconfigured token route
		if u, p, ok := r.BasicAuth(); ok && u == "alice" && p == "pw" {
			w.Header().Set("Authorization", "Bearer S-alice")
		}
		w.WriteHeader(200)
	})
	front := attackFront(t, app, "header:Authorization")
	req, _ := http.NewRequest("POST", front+"/api/token", nil)
	req.SetBasicAuth("alice", "pw")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if strings.Contains(res.Header.Get("Authorization"), "S-alice") {
		t.Fatalf("alice's new token released (status %d) because the request carried her password in Authorization", res.StatusCode)
	}
}
