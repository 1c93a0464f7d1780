// Command openloop offers HTTP requests at a constant arrival rate (an open loop) and
// reports what the clients saw: throughput and latency percentiles, each request's latency
// measured from the moment it was due, not from when it was sent. A closed-loop tool (wrk)
// sends the next request only after an answer, so a server that stalls also stops the
// load, and the requests that would have waited are never measured (coordinated omission).
//
// Requests go out on their schedule whatever the answers; in flight at most -max-inflight
// (a bound on the load, counted as "dropped" beyond it, so an overloaded server shows as
// drops and long latencies rather than as a gentler load). The run is bounded in count
// (rate × duration) and time (duration + timeout).
//
// Output: one line "OPENLOOP_JSON {...}" with the totals, percentiles and a per-second
// timeline (answers and p99 of each second), for the benchmark's table and plots.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type second struct {
	OK    int     `json:"ok"`
	P99Ms float64 `json:"p99_ms"`
}

type result struct {
	Offered     float64            `json:"offered_rate"`
	Seconds     float64            `json:"seconds"`
	Sent        int                `json:"sent"`
	OK          int                `json:"ok"`
	Non2xx      map[string]int     `json:"non_2xx"`
	Errors      int                `json:"errors"`
	Dropped     int                `json:"dropped"`
	Achieved    float64            `json:"achieved_rate"`
	P50Ms       float64            `json:"p50_ms"`
	P90Ms       float64            `json:"p90_ms"`
	P99Ms       float64            `json:"p99_ms"`
	P999Ms      float64            `json:"p999_ms"`
	MaxMs       float64            `json:"max_ms"`
	Percentiles map[string]float64 `json:"percentiles_ms"`
	Timeline    []second           `json:"timeline"`
}

type answer struct {
	due     time.Duration // since the start
	latency time.Duration // from due to answered
	status  int           // 0: transport error
}

func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(q/100*float64(len(sorted)))) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func main() {
	url := flag.String("url", "", "base URL, e.g. http://127.0.0.1:8080")
	mode := flag.String("mode", "post", "post: POST /deposit; get: GET /details/{wallet}")
	rate := flag.Float64("rate", 1000, "requests per second")
	duration := flag.Duration("duration", 10*time.Second, "how long requests are offered")
	wallets := flag.Int("wallets", 1000, "wallets the requests spread over")
	maxInFlight := flag.Int("max-inflight", 2048, "requests in flight at most (beyond: dropped)")
	timeout := flag.Duration("timeout", 10*time.Second, "per-request timeout")
	seed := flag.Int64("seed", 7, "wallet choice seed")
	flag.Parse()
	if *url == "" || *rate <= 0 || (*mode != "post" && *mode != "get") {
		fmt.Fprintln(os.Stderr, "usage: openloop -url http://127.0.0.1:8080 -mode post|get -rate N -duration 10s")
		os.Exit(2)
	}
	transport := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        *maxInFlight,
		MaxIdleConnsPerHost: *maxInFlight,
		MaxConnsPerHost:     *maxInFlight,
		IdleConnTimeout:     60 * time.Second,
	}
	client := &http.Client{Transport: transport, Timeout: *timeout}
	total := int(*rate * duration.Seconds())
	rng := rand.New(rand.NewSource(*seed))
	walletOf := make([]int, total)
	for i := range walletOf {
		walletOf[i] = rng.Intn(*wallets)
	}
	answers := make([]answer, 0, total)
	var mu sync.Mutex
	var wg sync.WaitGroup
	var inFlight atomic.Int64
	dropped := 0
	interval := float64(time.Second) / *rate
	start := time.Now()
	for i := 0; i < total; i++ {
		due := time.Duration(float64(i) * interval)
		if wait := time.Until(start.Add(due)); wait > 0 {
			time.Sleep(wait)
		}
		if inFlight.Load() >= int64(*maxInFlight) {
			dropped++
			continue
		}
		inFlight.Add(1)
		wg.Add(1)
		go func(due time.Duration, wallet int) {
			defer wg.Done()
			defer inFlight.Add(-1)
			wid := fmt.Sprintf("wallet%08d", wallet)
			var req *http.Request
			if *mode == "post" {
				body := []byte(`{"WalletID":"` + wid + `","Amount":1}`)
				req, _ = http.NewRequest(http.MethodPost, *url+"/deposit", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
			} else {
				req, _ = http.NewRequest(http.MethodGet, *url+"/details/"+wid, nil)
			}
			status := 0
			resp, err := client.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				status = resp.StatusCode
			}
			latency := time.Since(start) - due
			mu.Lock()
			answers = append(answers, answer{due, latency, status})
			mu.Unlock()
		}(due, walletOf[i])
	}
	offeredFor := time.Since(start)
	wg.Wait()
	elapsed := time.Since(start)

	res := result{Offered: *rate, Seconds: offeredFor.Seconds(), Sent: total - dropped, Dropped: dropped,
		Non2xx: map[string]int{}, Percentiles: map[string]float64{}}
	var okMs []float64
	perSecond := map[int][]float64{}
	for _, a := range answers {
		ms := float64(a.latency) / float64(time.Millisecond)
		switch {
		case a.status == 0:
			res.Errors++
		case a.status >= 200 && a.status < 300:
			res.OK++
			okMs = append(okMs, ms)
			s := int(a.due / time.Second)
			perSecond[s] = append(perSecond[s], ms)
		default:
			res.Non2xx[fmt.Sprint(a.status)]++
		}
	}
	sort.Float64s(okMs)
	res.Achieved = float64(res.OK) / math.Max(elapsed.Seconds(), 1e-3)
	res.P50Ms, res.P90Ms = percentile(okMs, 50), percentile(okMs, 90)
	res.P99Ms, res.P999Ms = percentile(okMs, 99), percentile(okMs, 99.9)
	if len(okMs) > 0 {
		res.MaxMs = okMs[len(okMs)-1]
	}
	for _, q := range []float64{10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99} {
		res.Percentiles[fmt.Sprint(q)] = percentile(okMs, q)
	}
	for s := 0; s < int(math.Ceil(duration.Seconds())); s++ {
		ms := perSecond[s]
		sort.Float64s(ms)
		p99 := percentile(ms, 99)
		if math.IsNaN(p99) {
			p99 = 0
		}
		res.Timeline = append(res.Timeline, second{OK: len(ms), P99Ms: p99})
	}
	for k, v := range res.Percentiles {
		if math.IsNaN(v) {
			delete(res.Percentiles, k)
		}
	}
	for _, p := range []*float64{&res.P50Ms, &res.P90Ms, &res.P99Ms, &res.P999Ms} {
		if math.IsNaN(*p) {
			*p = -1
		}
	}
	out, _ := json.Marshal(res)
	fmt.Println("OPENLOOP_JSON " + string(out))
}
