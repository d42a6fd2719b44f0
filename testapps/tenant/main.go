// A hostile tenant for memprof's tests: a process that, after memprof has first seen it,
// changes its root without exec (the same PID, the same /proc/PID/cgroup), renames itself with
// control characters, then takes memory at a steady rate and holds it.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	wait := flag.String("wait", "", "wait until this file exists before changing root")
	root := flag.String("chroot", "", "change root to this directory (no exec)")
	name := flag.String("name", "", "the name to take with PR_SET_NAME (control characters allowed)")
	alloc := flag.Int("alloc", 0, "MiB to take and hold")
	rate := flag.Int("rate", 50, "MiB/s at which to take them")
	flag.Parse()
	// PR_SET_NAME names the calling thread; the process's comm is its main thread's.
	runtime.LockOSThread()
	if *name != "" {
		b := append([]byte(*name), 0)
		if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0); e != 0 {
			fail("prctl", e)
		}
	}
	fmt.Printf("ready pid=%d\n", os.Getpid())
	if *wait != "" {
		for {
			if _, err := os.Stat(*wait); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if *root != "" {
		if err := syscall.Chroot(*root); err != nil {
			fail("chroot", err)
		}
		if err := os.Chdir("/"); err != nil {
			fail("chdir", err)
		}
		fmt.Println("changed root")
	}
	var held [][]byte
	for i := 0; i < *alloc; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = 1
		}
		held = append(held, b)
		time.Sleep(time.Second / time.Duration(*rate))
	}
	fmt.Println("holding")
	for {
		time.Sleep(time.Hour)
		runtime.KeepAlive(held)
	}
}

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "tenant: %s: %v\n", what, err)
	os.Exit(1)
}
