package proxy

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"io"
	"testing"
)

func compressed(t testing.TB, b []byte, newWriter func(io.Writer) io.WriteCloser) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := newWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	return compressed(t, b, func(w io.Writer) io.WriteCloser { return gzip.NewWriter(w) })
}

func zlibBytes(t testing.TB, b []byte) []byte {
	return compressed(t, b, func(w io.Writer) io.WriteCloser { return zlib.NewWriter(w) })
}
