// Package demo is a small web app for `totpgate demo` to stand in front of:
// a login form and a JSON login with a session cookie, /api/me, logout, and
// a page that shows who is logged in. It is a demo, never used by serve:
// passwords are fixed and sessions live in memory.
package demo

import (
	"crypto/rand"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"sync"
)

//go:embed assets
var assets embed.FS

// Password is every demo user's password; Users are the demo's users.
const Password = "demo"

// Users are the accounts of the demo app.
var Users = []string{"alice", "bob", "carol"}

// SessionCookie is the demo app's session cookie.
const SessionCookie = "demo_session"

// App is the demo app.
type App struct {
	mu       sync.Mutex
	sessions map[string]string // session id → user
	files    http.Handler
}

// New returns the demo app.
func New() *App {
	sub, _ := fs.Sub(assets, "assets")
	return &App{sessions: map[string]string{}, files: http.FileServer(http.FS(sub))}
}

func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
	switch r.URL.Path {
	case "/login":
		a.login(w, r)
	case "/logout":
		if c, err := r.Cookie(SessionCookie); err == nil {
			a.mu.Lock()
			delete(a.sessions, c.Value)
			a.mu.Unlock()
		}
		http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1})
		w.WriteHeader(http.StatusNoContent)
	case "/api/me":
		user := a.user(r)
		if user == "" {
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"error": "not logged in"})
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"id": user, "email": user + "@demo.example"})
	default:
		a.files.ServeHTTP(w, r)
	}
}

// login takes JSON {"username","password"} and answers the session cookie
// and {"user":{"id":…}}, as many apps do.
func (a *App) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	var creds struct{ Username, Password string }
	_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&creds)
	known := false
	for _, u := range Users {
		known = known || u == creds.Username
	}
	w.Header().Set("Content-Type", "application/json")
	if !known || creds.Password != Password {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]string{"error": "Wrong username or password."})
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	sid := hex.EncodeToString(b[:])
	a.mu.Lock()
	a.sessions[sid] = creds.Username
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: sid, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
	json.NewEncoder(w).Encode(map[string]any{"user": map[string]string{"id": creds.Username}})
}

func (a *App) user(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sessions[c.Value]
}

var _ http.Handler = (*App)(nil)
