// leaky is a Go service that retains memory at a fixed rate and serves net/http/pprof, the
// kind of process memprof exists for; with -addr "" it serves nothing, like most services.
// memprof's end-to-end tests run it in a memory cgroup until the OOM killer takes it, and
// check that its heap profile names leakyRetain.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

var retained [][]byte

// outsideHeap keeps the memory mapped outside Go's heap (-outside).
var outsideHeap []byte

// leakyRetain allocates n bytes, touches every page so they count in RSS, and keeps them.
//
//go:noinline
func leakyRetain(n int) {
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	retained = append(retained, b)
}

// cached is what fillCache holds for the process's life (-cache).
var cached [][]byte

// fillCache allocates n bytes in 64 KiB pieces and keeps them: a steady consumer beside the
// leak, which a profile shows and a comparison of two shows unchanged.
//
//go:noinline
func fillCache(n int) {
	for held := 0; held < n; held += 64 << 10 {
		piece := make([]byte, 64<<10)
		for i := 0; i < len(piece); i += 4096 {
			piece[i] = 1
		}
		cached = append(cached, piece)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:6060", "pprof listen address (empty: serve no endpoint)")
	rate := flag.Float64("rate", 200, "MiB retained per second")
	delay := flag.Duration("delay", 0, "wait this long before leaking")
	freeAt := flag.Float64("free-at", 0, "when this many MiB are retained, free them all and start over (0: never)")
	also := flag.String("also", "", "also listen here, serving a page that is not a profile (an application port)")
	gcPercent := flag.Int("gc-percent", 100, "GOGC: lower collects, and so publishes heap profiles, more often (as GOMEMLIMIT does near a limit)")
	failHeap := flag.Int("fail-heap", 0, "answer this many heap profile requests with 503 first (a service thrashing near its limit)")
	outside := flag.Int("outside", 0, "MiB to map and touch outside Go's heap (as cgo or mmap'd buffers are) before leaking")
	report := flag.Bool("report", false, "print the bytes the leak holds after every step (\"held N\")")
	cache := flag.Int("cache", 0, "MiB held from the start by a second function (fillCache), beside the leak")
	steps := flag.Bool("steps", false, "print every step's CLOCK_MONOTONIC start and end (ns) and the RSS after it (\"step T0 T1 RSS\"), to time when a level was crossed")
	flag.Parse()
	debug.SetGCPercent(*gcPercent)

	failures := make(chan struct{}, *failHeap+1)
	for i := 0; i < *failHeap; i++ {
		failures <- struct{}{}
	}
	http.HandleFunc("/debug/pprof/heap", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-failures:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			pprof.Handler("heap").ServeHTTP(w, r)
		}
	})

	listening := "none"
	if *addr != "" {
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			log.Fatalf("listen %s: %v", *addr, err)
		}
		go func() { log.Fatal(http.Serve(ln, nil)) }()
		listening = ln.Addr().String()
	}
	if *also != "" {
		ln, err := net.Listen("tcp", *also)
		if err != nil {
			log.Fatalf("listen %s: %v", *also, err)
		}
		app := http.NewServeMux()
		app.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
		go func() { log.Fatal(http.Serve(ln, app)) }()
	}
	fmt.Fprintf(os.Stdout, "ready pid=%d addr=%s\n", os.Getpid(), listening)

	if *outside > 0 {
		buf, err := syscall.Mmap(-1, 0, *outside<<20, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			log.Fatalf("mmap: %v", err)
		}
		for i := 0; i < len(buf); i += 4096 {
			buf[i] = 1
		}
		outsideHeap = buf
	}
	fillCache(*cache << 20)
	time.Sleep(*delay)
	const tick = 10 * time.Millisecond
	chunk := int(*rate * (1 << 20) * tick.Seconds())
	held := 0
	for range time.Tick(tick) {
		t0 := monotonicNs()
		leakyRetain(chunk)
		held += chunk
		if *steps {
			fmt.Fprintf(os.Stdout, "step %d %d %d\n", t0, monotonicNs(), rssBytes())
		}
		if *report {
			fmt.Fprintf(os.Stdout, "held %d\n", held)
		}
		if *freeAt > 0 && float64(held) >= *freeAt*(1<<20) {
			// Drop everything and hand the pages back, so RSS falls and can rise again.
			retained, held = nil, 0
			debug.FreeOSMemory()
		}
	}
}

// monotonicNs reads CLOCK_MONOTONIC, the clock the kernel's BPF timestamps and a benchmark's
// trace use (Go's own monotonic reading has another origin).
func monotonicNs() int64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// rssBytes is the resident set as the kernel counts it for rss_stat (file, anonymous and
// shared pages), from /proc/self/statm.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return -1
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
