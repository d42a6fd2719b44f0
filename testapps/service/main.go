// service is a small JSON service of the kind memprof watches: GET /item?id=N answers an item
// (a few fields and ~50 entries, some KB of JSON, encoded anew for every request) out of a
// bounded LRU cache that holds -cache MiB, so the heap is a real service's steady size and
// misses keep the allocator and the collector busy. It serves net/http/pprof on the same mux,
// as the services memprof profiles do. `cargo xtask bench` drives it with testapps/load to
// measure what memprof costs a service.
package main

import (
	"container/list"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

// Entry is one line of an item: what a catalogue or an order holds.
type Entry struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	Quantity   int    `json:"quantity"`
	PriceCents int64  `json:"price_cents"`
	Available  bool   `json:"available"`
}

type Item struct {
	ID          int       `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	Owner       string    `json:"owner"`
	Created     time.Time `json:"created"`
	Tags        []string  `json:"tags"`
	Entries     []Entry   `json:"entries"`
}

// response is what a request adds to the cached item: computed per request, as services do.
type response struct {
	*Item
	TotalCents int64     `json:"total_cents"`
	Served     time.Time `json:"served"`
}

const entriesPerItem = 50

var words = []string{"amber", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor",
	"indigo", "juniper", "krypton", "lagoon", "meadow", "nickel", "obsidian", "prairie"}

// build makes item id, as a miss would fetch it from a database.
func build(id int) *Item {
	it := &Item{
		ID:          id,
		Name:        fmt.Sprintf("item %d %s", id, words[id%len(words)]),
		Description: fmt.Sprintf("The %s %s of batch %d, kept in %s since its first order.", words[id%7], words[id%11], id/100, words[id%13]),
		Owner:       fmt.Sprintf("team-%s-%d", words[id%5], id%97),
		Created:     time.Unix(1700000000+int64(id)*3600, 0).UTC(),
		Tags:        []string{words[id%3], words[id%9], words[id%15]},
		Entries:     make([]Entry, entriesPerItem),
	}
	for i := range it.Entries {
		it.Entries[i] = Entry{
			SKU:        fmt.Sprintf("SKU-%08d-%02d", id, i),
			Name:       fmt.Sprintf("%s %s", words[(id+i)%len(words)], words[(id*i)%len(words)]),
			Quantity:   (id*31 + i*7) % 100,
			PriceCents: int64((id*131+i*17)%50000 + 99),
			Available:  (id+i)%4 != 0,
		}
	}
	return it
}

// size is roughly what an item holds on the heap, with its cache bookkeeping: the cache is
// bounded by it.
func size(it *Item) int {
	n := int(unsafe.Sizeof(*it)) + len(it.Name) + len(it.Description) + len(it.Owner)
	n += len(it.Tags)*int(unsafe.Sizeof("")) + cap(it.Entries)*int(unsafe.Sizeof(Entry{}))
	for _, e := range it.Entries {
		n += len(e.SKU) + len(e.Name)
	}
	return n + 128 // list element, map slot, cached record
}

type cached struct {
	id   int
	item *Item
	size int
}

// cache holds the most recently used items up to limit bytes.
type cache struct {
	mu    sync.Mutex
	limit int
	held  int
	order *list.List // front: used last
	byID  map[int]*list.Element
}

func (c *cache) get(id int) *Item {
	c.mu.Lock()
	if e, ok := c.byID[id]; ok {
		c.order.MoveToFront(e)
		it := e.Value.(*cached).item
		c.mu.Unlock()
		return it
	}
	c.mu.Unlock()
	// Built outside the lock, as a real service would wait for its database.
	it := build(id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byID[id]; ok { // built meanwhile by another request
		return e.Value.(*cached).item
	}
	rec := &cached{id: id, item: it, size: size(it)}
	c.byID[id] = c.order.PushFront(rec)
	c.held += rec.size
	for c.held > c.limit {
		old := c.order.Remove(c.order.Back()).(*cached)
		delete(c.byID, old.id)
		c.held -= old.size
	}
	return it
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "listen address (the API and /debug/pprof)")
	cacheMiB := flag.Int("cache", 64, "MiB of items the cache holds (filled before the service is ready)")
	flag.Parse()

	items := &cache{limit: *cacheMiB << 20, order: list.New(), byID: map[int]*list.Element{}}
	// Filled first, so the heap is at its steady size from the first request. The n items
	// it holds (printed) are the first n ids, give or take one: a load generator choosing
	// ids uniformly among 1.25 n hits the cache 80 % of the time.
	for id := 0; items.held < items.limit; id++ {
		items.get(id)
	}
	http.HandleFunc("/item", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(r.URL.Query().Get("id"))
		if err != nil || id < 0 {
			http.Error(w, "id: a non-negative integer", http.StatusBadRequest)
			return
		}
		resp := response{Item: items.get(id), Served: time.Now().UTC()}
		for _, e := range resp.Entries {
			resp.TotalCents += int64(e.Quantity) * e.PriceCents
		}
		body, err := json.Marshal(resp)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen %s: %v", *addr, err)
	}
	fmt.Fprintf(os.Stdout, "ready pid=%d addr=%s items=%d\n", os.Getpid(), ln.Addr(), items.order.Len())
	log.Fatal(http.Serve(ln, nil))
}
