// Command upstream is a minimal HTTP origin used only by the pass-through
// benchmarks in bench/passthrough.sh. It answers GET / with a fixed 1 KiB
// text/plain body and keeps connections alive. It is not part of totpgate.
package main

import (
	"bytes"
	"flag"
	"log"
	"net/http"
	"strconv"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "address to listen on (loopback)")
	flag.Parse()

	body := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1024 bytes
	body[len(body)-1] = '\n'
	contentLength := strconv.Itoa(len(body))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Content-Length", contentLength)
		_, _ = w.Write(body)
	})

	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	srv.SetKeepAlivesEnabled(true)
	log.Printf("upstream listening on %s", *listen)
	log.Fatal(srv.ListenAndServe())
}
