package interop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lovoo/goka"
	"github.com/lovoo/goka/storage"

	"walletinterop/reference"
)

// The stack under test: tests/interop/test_goka_interop.py starts Apache Kafka and the three
// services and runs `go test ./...` with these set. Without them there is nothing to test against.
func stack(t *testing.T) (brokers []string, api string) {
	t.Helper()
	b, a := os.Getenv("WALLET_INTEROP_BROKERS"), os.Getenv("WALLET_INTEROP_API")
	if b == "" || a == "" {
		t.Skip("needs the running stack: run `pytest tests/interop` (it sets WALLET_INTEROP_BROKERS and WALLET_INTEROP_API)")
	}
	return strings.Split(b, ","), strings.TrimRight(a, "/")
}

// runID keeps this run's wallets apart from any earlier run's on the same cluster
// (WALLET_INTEROP_RUN shares one between the phases of the migration).
var runID = func() string {
	if id := os.Getenv("WALLET_INTEROP_RUN"); id != "" {
		return id
	}
	return strconv.FormatInt(time.Now().UnixNano()%1_000_000_000, 36)
}()

func wallet(name string) string { return "goka-" + runID + "-" + name }

type details struct {
	Status  int
	Balance string // the JSON number as written (exact decimal)
	Flag    bool
}

func getDetails(t *testing.T, api, id string) details {
	t.Helper()
	resp, err := http.Get(api + "/details/" + id)
	if err != nil {
		t.Fatalf("GET /details/%s: %v", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return details{Status: resp.StatusCode}
	}
	var body struct {
		WalletID       string
		Balance        json.Number
		AboveThreshold bool
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("GET /details/%s: %v", id, err)
	}
	return details{Status: 200, Balance: body.Balance.String(), Flag: body.AboveThreshold}
}

// postDeposit sends a deposit through our API and returns the partition of its ConsistencyToken.
func postDeposit(t *testing.T, api, id, amount, key string) int32 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, api+"/deposit",
		bytes.NewBufferString(fmt.Sprintf(`{"WalletID":%q,"Amount":%s}`, id, amount)))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /deposit %s: %v", id, err)
	}
	defer resp.Body.Close()
	var body struct{ ConsistencyToken string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /deposit %s: status %d, %v", id, resp.StatusCode, err)
	}
	p, err := strconv.Atoi(strings.SplitN(body.ConsistencyToken, "-", 2)[0])
	if err != nil {
		t.Fatalf("POST /deposit %s: token %q", id, body.ConsistencyToken)
	}
	return int32(p)
}

// waitFor polls check until it reports no mismatch, or fails the test with the last one.
func waitFor(t *testing.T, timeout time.Duration, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		mismatch := check()
		if mismatch == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still wrong after %s: %s", what, timeout, mismatch)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// expectDetails waits until the API answers every wallet of want exactly so.
func expectDetails(t *testing.T, api, what string, want map[string]details) {
	t.Helper()
	waitFor(t, 60*time.Second, what, func() string {
		var wrong []string
		for id, w := range want {
			if got := getDetails(t, api, id); got != w {
				wrong = append(wrong, fmt.Sprintf("%s: got %+v, want %+v", id, got, w))
			}
		}
		sort.Strings(wrong)
		return strings.Join(wrong, "; ")
	})
}

func newEmitter(t *testing.T, brokers []string) *goka.Emitter {
	t.Helper()
	em, err := goka.NewEmitter(brokers, goka.Stream("deposit"), DepositCodec{})
	if err != nil {
		t.Fatalf("goka.NewEmitter: %v", err)
	}
	t.Cleanup(func() { _ = em.Finish() })
	return em
}

type deposit struct {
	wallet string
	amount float64
	at     int64 // CreatedAt, Unix seconds (all the reference has)
}

func emit(t *testing.T, em *goka.Emitter, d deposit) {
	t.Helper()
	err := em.EmitSync(d.wallet, &reference.DepositRequest{WalletID: d.wallet, Amount: d.amount, CreatedAt: d.at})
	if err != nil {
		t.Fatalf("emit %+v: %v", d, err)
	}
}

// Scenario 1: a Goka emitter with the reference codec (fields 1-3, seconds, float amounts)
// feeds our processors; the API answers by the design's rules.
func TestGokaEmitterDepositsFollowTheRules(t *testing.T) {
	brokers, api := stack(t)
	em := newEmitter(t, brokers)
	t0 := time.Now().Unix()
	var deposits []deposit
	add := func(name string, amount float64, at int64) {
		deposits = append(deposits, deposit{wallet(name), amount, at})
	}
	add("A", 10000, t0)    // exactly the threshold: not above
	add("B", 10000.01, t0) // above by a cent
	add("C", 6000, t0)     // 6,000 then 6,000 exactly 120 s later: windows are (t-120, t]
	add("C", 6000, t0+120)
	add("D", 6000, t0) // ... and 119 s later: one window holds both
	add("D", 6000, t0+119)
	add("E", 6000, t0+50) // out of order: the later deposit arrives first
	add("E", 4000.01, t0)
	for i := int64(0); i < 10; i++ {
		add("F", 0.1, t0+i) // ten times 0.1 is exactly 1
	}
	for i := int64(0); i < 6; i++ {
		add("G", 2000, t0+20*i) // six of 2,000 within 2 minutes
	}
	for i := int64(0); i < 5; i++ {
		add("H", 2000, t0+20*i) // five
	}
	for _, d := range deposits {
		emit(t, em, d)
	}
	want := map[string]details{
		wallet("A"): {200, "10000", false}, wallet("B"): {200, "10000.01", true},
		wallet("C"): {200, "12000", false}, wallet("D"): {200, "12000", true},
		wallet("E"): {200, "10000.01", true}, wallet("F"): {200, "1", false},
		wallet("G"): {200, "12000", true}, wallet("H"): {200, "10000", false},
	}
	expectDetails(t, api, "the API's details of the Goka-emitted deposits", want)
	t.Logf("scenario 1: %d deposits from goka.Emitter, %d wallets exactly as the rules say", len(deposits), len(want))
}

func runView(t *testing.T, brokers []string, table string, codec goka.Codec) *goka.View {
	t.Helper()
	view, err := goka.NewView(brokers, goka.Table(table), codec, goka.WithViewStorageBuilder(storage.MemoryBuilder()))
	if err != nil {
		t.Fatalf("goka.NewView(%s): %v", table, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- view.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("view %s: %v", table, err)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !view.Recovered() {
		if time.Now().After(deadline) {
			t.Fatalf("goka view of %s never recovered", table)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return view
}

// Under exactly_once our changelog records are committed in transactions, so the last offset
// of every partition is a commit marker, which consumers never receive. Goka's recovery waits
// for a message at the high watermark - 1 (partition_table.go, loadMessages) and so never
// ends: a Goka view cannot read a table written transactionally. This test pins that down
// (docs/migrating-from-goka.md: Goka readers need applied_offsets); it fails the day Goka
// recovers such a table, or our processors stop writing transactionally.
func TestGokaViewCannotRecoverATransactionallyWrittenTable(t *testing.T) {
	brokers, api := stack(t)
	if os.Getenv("WALLET_INTEROP_GUARANTEE") != "exactly_once" {
		t.Skip("for a stack under exactly_once")
	}
	id := wallet("txn")
	postDeposit(t, api, id, "5", "")
	waitFor(t, 30*time.Second, "the deposit in our API", func() string {
		if got := getDetails(t, api, id); got.Balance != "5" {
			return fmt.Sprintf("%+v", got)
		}
		return ""
	})
	view, err := goka.NewView(brokers, goka.Table("balance-table"), WalletCodec{},
		goka.WithViewStorageBuilder(storage.MemoryBuilder()))
	if err != nil {
		t.Fatalf("goka.NewView: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- view.Run(ctx) }()
	time.Sleep(15 * time.Second)
	recovered := view.Recovered()
	cancel()
	<-done
	if recovered {
		t.Fatalf("a Goka view recovered a transactionally written table: Goka readers no longer need applied_offsets; update docs/migrating-from-goka.md")
	}
	t.Logf("as documented: a Goka view of balance-table written under exactly_once is still recovering after 15 s")
}

// Scenario 2 (a stack under applied_offsets, see above): Goka views with the reference codecs read our tables as the Go service did:
// the balance from Wallet.Balance, the flag from the last List entry, for every state our
// processors write (flagged, trimmed windows, keyed deposits, deposits from both emitters).
func TestGokaViewsReadOurTablesLikeOurAPI(t *testing.T) {
	brokers, api := stack(t)
	if os.Getenv("WALLET_INTEROP_GUARANTEE") != "applied_offsets" {
		t.Skip("for a stack under applied_offsets: a Goka view cannot recover a transactionally written table")
	}
	em := newEmitter(t, brokers)
	t0 := time.Now().Unix()
	ids := map[string]bool{}
	use := func(name string) string { id := wallet("v-" + name); ids[id] = true; return id }
	postDeposit(t, api, use("plain"), "8000", "")
	flagged := use("flagged") // two of 6,000: flagged, its state shrinks to the newest deposit
	postDeposit(t, api, flagged, "6000", "")
	postDeposit(t, api, flagged, "6000", "")
	postDeposit(t, api, flagged, "1.25", "")
	keyed := use("keyed") // keyed deposits travel in the table value (field 5): unknown to Go
	postDeposit(t, api, keyed, "7000", "k-1")
	postDeposit(t, api, keyed, "7000", "k-1") // a retry: charged once
	postDeposit(t, api, keyed, "2000.5", "k-2")
	trimmed := use("trimmed") // the old deposit falls out of the kept window
	emit(t, em, deposit{trimmed, 9000, t0 - 1000})
	emit(t, em, deposit{trimmed, 9000, t0})
	emit(t, em, deposit{trimmed, 500.5, t0 + 1})
	late := use("late-flag") // flagged by a deposit that arrives out of order
	emit(t, em, deposit{late, 5000, t0 + 30})
	emit(t, em, deposit{late, 5000.5, t0})
	mixed := use("mixed") // both emitters
	postDeposit(t, api, mixed, "0.1", "")
	emit(t, em, deposit{mixed, 0.2, t0})

	wantAPI := map[string]details{
		use("plain"): {200, "8000", false}, flagged: {200, "12001.25", true}, keyed: {200, "9000.5", false},
		trimmed: {200, "18500.5", false}, late: {200, "10000.5", true}, mixed: {200, "0.3", false},
	}
	expectDetails(t, api, "the API", wantAPI)
	balances := runView(t, brokers, "balance-table", WalletCodec{})
	flags := runView(t, brokers, "above_threshold-table", WalletInfoListCodec{})
	waitFor(t, 60*time.Second, "Goka views against the API", func() string {
		for id := range ids {
			d := getDetails(t, api, id)
			want, _ := strconv.ParseFloat(d.Balance, 64)
			bv, err := balances.Get(id)
			if err != nil || bv == nil {
				return fmt.Sprintf("%s: balance view: %v %v", id, bv, err)
			}
			if got := bv.(*reference.Wallet).Balance; math.Float64bits(got) != math.Float64bits(want) {
				return fmt.Sprintf("%s: Goka view balance %v, API %s", id, got, d.Balance)
			}
			fv, err := flags.Get(id)
			if err != nil || fv == nil {
				return fmt.Sprintf("%s: above_threshold view: %v %v", id, fv, err)
			}
			if got := ReferenceFlag(fv.(*reference.WalletInfoList)); got != d.Flag {
				return fmt.Sprintf("%s: Goka view flag (last List entry) %v, API %v; list %v", id, got, d.Flag, fv)
			}
		}
		return ""
	})
	t.Logf("scenario 2: goka.View of both tables equals the API for %d wallets (flagged, trimmed, keyed, late, mixed)", len(ids))
}

func runProcessor(t *testing.T, brokers []string, graph *goka.GroupGraph) (stop func()) {
	t.Helper()
	p, err := goka.NewProcessor(brokers, graph, goka.WithStorageBuilder(storage.MemoryBuilder()))
	if err != nil {
		t.Fatalf("goka.NewProcessor(%s): %v", graph.Group(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	// Goka starts a new group at the newest offset (sarama's Offsets.Initial): deposits are
	// emitted only once it consumes, as the Go service would have been running already.
	if err := waitForReady(p); err != nil {
		t.Fatalf("processor %s: %v", graph.Group(), err)
	}
	return func() {
		cancel() // a graceful stop: the processed offsets are committed
		stopped(t, graph.Group(), <-done)
	}
}

// Scenario 3: migration from the Go service. Phase "goka": the reference processors (Goka,
// float balances, no applied offsets) build both tables and commit offsets in groups
// balance and above_threshold, then stop. Phase "ours" (after the driver started our
// processors on the same groups): more deposits; our API shows exact totals across the
// hand-over, nothing applied twice, and a window that spans it still flags.
func TestMigrationFromGoka(t *testing.T) {
	brokers, api := stack(t)
	phase := os.Getenv("WALLET_INTEROP_PHASE")
	if phase == "" {
		t.Skip("driven in two phases by test_goka_interop.py (WALLET_INTEROP_PHASE=goka, then ours)")
	}
	em := newEmitter(t, brokers)
	t0, _ := strconv.ParseInt(os.Getenv("WALLET_INTEROP_T0"), 10, 64)
	a, b, c, d, e := wallet("m-a"), wallet("m-b"), wallet("m-c"), wallet("m-d"), wallet("m-e")
	switch phase {
	case "goka":
		stopBalance := runProcessor(t, brokers, BalanceGroup())
		stopFlags := runProcessor(t, brokers, AboveThresholdGroup())
		for i := int64(0); i < 4; i++ {
			emit(t, em, deposit{a, 100.25, t0 + i})
		}
		emit(t, em, deposit{b, 6000, t0})
		emit(t, em, deposit{b, 6000, t0 + 1})
		for i := int64(0); i < 3; i++ {
			emit(t, em, deposit{c, 0.1, t0 + i}) // the Go service's float sum: 0.30000000000000004
		}
		emit(t, em, deposit{e, 6000, t0})
		postDeposit(t, api, a, "1", "") // our emitter's records, read by the reference's fields
		balances := runView(t, brokers, "balance-table", WalletCodec{})
		flags := runView(t, brokers, "above_threshold-table", WalletInfoListCodec{})
		tenth := 0.1                      // a variable: Go folds constant 0.1+0.1+0.1 to exactly 0.3
		floatSum := tenth + tenth + tenth // what the reference's float additions stored
		want := map[string]float64{a: 402, b: 12000, c: floatSum, e: 6000}
		waitFor(t, 60*time.Second, "the Goka processors' tables", func() string {
			for id, w := range want {
				v, err := balances.Get(id)
				if err != nil || v == nil || v.(*reference.Wallet).Balance != w {
					return fmt.Sprintf("%s: %v %v, want %v", id, v, err, w)
				}
			}
			f, _ := flags.Get(b)
			if f == nil || !ReferenceFlag(f.(*reference.WalletInfoList)) {
				return fmt.Sprintf("%s not flagged by the reference: %v", b, f)
			}
			return ""
		})
		stopBalance()
		stopFlags()
		t.Logf("scenario 3, phase goka: the reference processors built both tables for %d wallets and stopped", len(want))
	case "ours":
		postDeposit(t, api, a, "0.75", "")
		emit(t, em, deposit{c, 0.2, t0 + 5})
		postDeposit(t, api, d, "10000.01", "")
		emit(t, em, deposit{e, 4000.5, t0 + 60}) // its window holds the Go-written 6,000
		want := map[string]details{
			a: {200, "402.75", false}, b: {200, "12000", true}, c: {200, "0.5", false},
			d: {200, "10000.01", true}, e: {200, "10000.5", true},
		}
		expectDetails(t, api, "our API after the hand-over", want)
		t.Logf("scenario 3, phase ours: exact totals across the hand-over for %d wallets", len(want))
	default:
		t.Fatalf("WALLET_INTEROP_PHASE %q: want goka or ours", phase)
	}
}
