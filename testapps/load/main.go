// load is a closed-loop load generator: -conns workers, each on its own keep-alive
// connection, send GET <url>?id=N (N uniform in [0, -ids)) one after the other for -warmup
// and then -duration, and one JSON line reports what the measured part did:
// {"requests":…,"rps":…,"p50_us":…,"p99_us":…,"errors":…}. Every latency is kept and the
// percentiles are read from them sorted: the costs compared are fractions of a percent, and a
// histogram's buckets would be coarser than that. `cargo xtask bench` drives testapps/service
// with it.
package main

import (
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
}

type worker struct {
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
	flag.Parse()
	if *url == "" || *conns < 1 || *ids < 1 {
		log.Fatal("-url is required; -conns and -ids must be at least 1")
	}

	transport := &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns, DisableCompression: true}
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}
	measureFrom := time.Now().Add(*warmup)
	stop := measureFrom.Add(*duration)
	workers := make([]worker, *conns)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func(w *worker, seed int64) {
			defer wg.Done()
			w.run(client, *url, *ids, seed, measureFrom, stop)
		}(&workers[i], int64(i+1))
	}
	wg.Wait()

	var all []time.Duration
	errors := 0
	end := measureFrom
	for _, w := range workers {
		all = append(all, w.latencies...)
		errors += w.errors
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
	out, _ := json.Marshal(report{len(all), rps, percentile(all, 50), percentile(all, 99), errors})
	fmt.Fprintln(os.Stdout, string(out))
}
