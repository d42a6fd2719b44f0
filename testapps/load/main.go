// load is a closed-loop load generator: -conns workers, each on its own keep-alive
// connection, send GET <url>?id=N (N uniform in [0, -ids)) one after the other for -warmup
// and then -duration, and one JSON line reports what the measured part did:
// {"requests":…,"rps":…,"p50_us":…,"p99_us":…,"errors":…,"sent":…} ("sent": the warm-up's
// requests too). With -stdin it stays running and
// does one such run per line read from its standard input (the line names the measured part's
// duration), over the same connections: a client that comes and goes would be met anew by
// whatever watches the machine's processes, and that first sight is not what a running
// service pays. Every latency is kept and the
// percentiles are read from them sorted: the costs compared are fractions of a percent, and a
// histogram's buckets would be coarser than that. `cargo xtask bench` drives testapps/service
// with it.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// report is the one line printed, its fields in this order.
type report struct {
	Requests int     `json:"requests"`
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
	Errors   int     `json:"errors"`
	Sent     int     `json:"sent"`
}

type worker struct {
	sent      int
	latencies []time.Duration
	errors    int
	lastEnd   time.Time
}

// run sends requests until stop; those sent from measureFrom on are counted.
func (w *worker) run(client *http.Client, url string, ids int, seed int64, measureFrom, stop time.Time) {
	rng := rand.New(rand.NewSource(seed))
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	for {
		start := time.Now()
		if !start.Before(stop) {
			return
		}
		ok := get(client, fmt.Sprintf("%s%sid=%d", url, sep, rng.Intn(ids)))
		end := time.Now()
		w.sent++
		if start.Before(measureFrom) {
			continue
		}
		if ok {
			w.latencies = append(w.latencies, end.Sub(start))
		} else {
			w.errors++
		}
		w.lastEnd = end
	}
}

// get reads the whole answer, so that the connection is reused.
func get(client *http.Client, url string) bool {
	resp, err := client.Get(url)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err == nil && resp.StatusCode == http.StatusOK
}

// percentile is the nearest-rank p-th percentile of sorted, in microseconds.
func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	if rank < 0 {
		rank = 0
	}
	return float64(sorted[rank].Nanoseconds()) / 1e3
}

func main() {
	url := flag.String("url", "", "the URL to GET (?id=N or &id=N is appended)")
	conns := flag.Int("conns", 2, "workers, each with one keep-alive connection")
	ids := flag.Int("ids", 16384, "ids are drawn uniformly from [0, ids)")
	duration := flag.Duration("duration", 5*time.Second, "how long the measured part lasts")
	warmup := flag.Duration("warmup", time.Second, "how long requests are sent, uncounted, first")
	stdin := flag.Bool("stdin", false, "stay running: one run per line of standard input, each line the measured part's duration (e.g. 5s)")
	flag.Parse()
	if *url == "" || *conns < 1 || *ids < 1 {
		log.Fatal("-url is required; -conns and -ids must be at least 1")
	}

	transport := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns, DisableCompression: true}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	if !*stdin {
		measure(client, *url, *conns, *ids, *warmup, *duration, 1)
		return
	}
	lines := bufio.NewScanner(os.Stdin)
	for run := int64(0); lines.Scan(); run++ {
		d, err := time.ParseDuration(strings.TrimSpace(lines.Text()))
		if err != nil || d <= 0 {
			log.Fatalf("a line of standard input must be a duration such as 5s, not %q", lines.Text())
		}
		// Each run draws other ids, as separate invocations would.
		measure(client, *url, *conns, *ids, *warmup, d, run*int64(*conns)+1)
	}
	if err := lines.Err(); err != nil {
		log.Fatalf("reading standard input: %v", err)
	}
}

// measure runs the workers for warmup and then duration, and prints the report line.
func measure(client *http.Client, url string, conns, ids int, warmup, duration time.Duration, seed int64) {
	measureFrom := time.Now().Add(warmup)
	stop := measureFrom.Add(duration)
	workers := make([]worker, conns)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func(w *worker, seed int64) {
			defer wg.Done()
			w.run(client, url, ids, seed, measureFrom, stop)
		}(&workers[i], seed+int64(i))
	}
	wg.Wait()

	var all []time.Duration
	errors, sent := 0, 0
	end := measureFrom
	for _, w := range workers {
		all = append(all, w.latencies...)
		errors += w.errors
		sent += w.sent
		if w.lastEnd.After(end) {
			end = w.lastEnd
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	// The window ends with the last answer: requests begun before stop are counted whole.
	// Those straddling measureFrom are not, which undercounts by at most one per worker.
	elapsed := end.Sub(measureFrom).Seconds()
	rps := 0.0
	if elapsed > 0 {
		rps = float64(len(all)) / elapsed
	}
	out, _ := json.Marshal(report{len(all), rps, percentile(all, 50), percentile(all, 99), errors, sent})
	fmt.Fprintln(os.Stdout, string(out))
}
