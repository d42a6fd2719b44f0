// stacks allocates from many distinct call stacks, some of them deep, with every allocation
// sampled (MemProfileRate = 1), then leaks from one site until the OOM killer takes it. memprof's
// tests check that both heap readers bring back every stack, whole.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"
)

var kept [][]byte

//go:noinline
func leaf(n int) { kept = append(kept, make([]byte, n)) }

// step walks down `depth` levels, choosing stepA or stepB by the bits of i, so each i
// allocates from its own stack.
//
//go:noinline
func step(i, depth int) {
	if depth == 0 {
		leaf(1024)
		return
	}
	if i&1 == 1 {
		stepA(i>>1, depth-1)
	} else {
		stepB(i>>1, depth-1)
	}
}

//go:noinline
func stepA(i, depth int) { step(i, depth) }

//go:noinline
func stepB(i, depth int) { step(i, depth) }

// deep allocates at the bottom of n frames of itself, under one of two callers.
//
//go:noinline
func deep(n, variant int) {
	if n > 0 {
		deep(n-1, variant)
		return
	}
	if variant == 0 {
		leaf(2048)
	} else {
		leaf(4096)
	}
}

//go:noinline
func leakyRetain(n int) {
	b := make([]byte, n)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	kept = append(kept, b)
}

func main() {
	sampled := flag.Bool("sampled", true, "sample every allocation; false leaves the profiler as the linker set it (off: this program never references it)")
	stacks := flag.Int("stacks", 12000, "distinct shallow stacks to allocate from (at most 2^bits)")
	bits := flag.Int("bits", 14, "levels of the shallow stacks")
	depth := flag.Int("deep", 90, "frames of the deep stacks")
	rate := flag.Float64("rate", 100, "MiB leaked per second after the stacks are made")
	delay := flag.Duration("delay", time.Second, "wait this long before leaking")
	freed := flag.Bool("freed", false, "free what the shallow stacks allocated, and make the leak's first allocation before them: its bucket is then the oldest, behind thousands that hold no live memory")
	flag.Parse()
	if *sampled {
		runtime.MemProfileRate = 1
	}

	const tick = 10 * time.Millisecond
	chunk := int(*rate * (1 << 20) * tick.Seconds())
	makeStacks := func() {
		for i := 0; i < *stacks; i++ {
			step(i, *bits)
		}
		if *freed {
			kept = [][]byte{kept[0]} // a new array: the old one would still reach them
			runtime.GC()             // the first cycle frees them, the second publishes the frees
			runtime.GC()
		}
		deep(*depth, 0)
		deep(*depth, 1)
		runtime.GC() // publish the stacks in the heap profile
		fmt.Fprintf(os.Stdout, "ready pid=%d stacks=%d\n", os.Getpid(), *stacks+2)
		time.Sleep(*delay)
	}
	if !*freed {
		makeStacks()
	}
	ticks := time.Tick(tick)
	for i := 0; ; i++ {
		// One call site, so one bucket: with -freed its first allocation precedes the stacks.
		leakyRetain(chunk)
		if i == 0 && *freed {
			makeStacks()
		}
		<-ticks
	}
}
