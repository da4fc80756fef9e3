package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PGServer is a private PostgreSQL server (initdb in a temporary
// directory) for tests that stop, crash and restart the database, which
// they must not do to the shared server other tests use.
type PGServer struct {
	DSN  string
	dir  string
	port int
	bin  string
}

// StartPGServer runs initdb and starts a server on a free loopback port,
// stopped when the test ends. PostgreSQL refuses to run as root, so as
// root it runs as the postgres system user.
func StartPGServer(t testing.TB) *PGServer {
	t.Helper()
	bin, err := pgBinDir()
	if err != nil {
		t.Fatalf("testenv: %v (install PostgreSQL's server package)", err)
	}
	dir, err := os.MkdirTemp("", "totpgate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("testenv: running as root needs the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	s := &PGServer{dir: dir, port: freePort(t), bin: bin}
	s.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	if out, err := s.pg("initdb", "-D", filepath.Join(dir, "data"), "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		t.Fatalf("testenv: initdb: %v\n%s", err, out)
	}
	s.Start(t)
	t.Cleanup(func() { _, _ = s.pg("pg_ctl", "-D", filepath.Join(dir, "data"), "stop", "-m", "immediate", "-w") })
	return s
}

// Start starts the server and waits until it accepts connections.
func (s *PGServer) Start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200", s.port, s.dir)
	if out, err := s.pg("pg_ctl", "-D", filepath.Join(s.dir, "data"), "-o", opts, "-l", filepath.Join(s.dir, "log"), "start", "-w", "-t", "60"); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "log"))
		t.Fatalf("testenv: start postgres: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the server: "fast" (clean shutdown) or "immediate" (a crash:
// no checkpoint, recovery from the WAL at the next start).
func (s *PGServer) Stop(t testing.TB, mode string) {
	t.Helper()
	if out, err := s.pg("pg_ctl", "-D", filepath.Join(s.dir, "data"), "stop", "-m", mode, "-w", "-t", "60"); err != nil {
		t.Fatalf("testenv: stop postgres: %v\n%s", err, out)
	}
}

func (s *PGServer) pg(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(s.bin, tool)
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = s.dir
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
		return out, err
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		return out, fmt.Errorf("%s timed out", tool)
	}
}

// pgBinDir finds the newest /usr/lib/postgresql/<v>/bin with initdb.
func pgBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(dirs) == 0 {
		if p, err := exec.LookPath("initdb"); err == nil {
			return filepath.Dir(p), nil
		}
		return "", fmt.Errorf("initdb not found")
	}
	best, bestV := "", -1
	for _, d := range dirs {
		v, _ := strconv.Atoi(strings.Split(strings.TrimPrefix(d, "/usr/lib/postgresql/"), "/")[0])
		if v > bestV {
			best, bestV = filepath.Dir(d), v
		}
	}
	return best, nil
}
