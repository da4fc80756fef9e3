//go:build unix

package proxy

import "syscall"

const peekSupported = true

// quiet reports whether nothing waits on an idle connection: no stray
// bytes (an answer nobody asked for) and no end of stream (the app closed
// it). One non-blocking peek, the system call http.Transport's read loop
// makes on an idle connection too.
func (pc *upConn) quiet() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	sc, ok := pc.conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var (
		buf  [1]byte
		n    int
		perr error
	)
	if err := raw.Read(func(fd uintptr) bool {
		n, _, perr = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return false
	}
	return n <= 0 && (perr == syscall.EAGAIN || perr == syscall.EWOULDBLOCK)
}
