//go:build !reference_pins

package interop

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"

	"walletinterop/reference"
)

// Outside the build of the reference's own pins (go.reference.mod: goka v1.1.7 with
// github.com/Shopify/sarama), whose promises carry that module's message type.

// Scenario 1, partitions: for many keys, Goka's own emitter (its default hasher and sarama's
// partitioner, not a copy of them) picks the partition our emitter picked.
func TestGokaPartitionsKeysLikeOurEmitter(t *testing.T) {
	brokers, api := stack(t)
	em := newEmitter(t, brokers)
	const n = 300
	var mu sync.Mutex
	byGoka := map[string]int32{}
	ours := map[string]int32{}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		id := wallet(fmt.Sprintf("p%03d-%c", i, 'a'+rune(i%26)))
		ours[id] = postDeposit(t, api, id, "1", "")
		promise, err := em.Emit(id, &reference.DepositRequest{WalletID: id, Amount: 2, CreatedAt: time.Now().Unix()})
		if err != nil {
			t.Fatalf("emit %s: %v", id, err)
		}
		wg.Add(1)
		promise.ThenWithMessage(func(msg *sarama.ProducerMessage, err error) {
			defer wg.Done()
			if err != nil {
				t.Errorf("emit %s: %v", id, err)
				return
			}
			mu.Lock()
			byGoka[id] = msg.Partition
			mu.Unlock()
		})
	}
	wg.Wait()
	partitions := map[int32]bool{}
	for id, p := range ours {
		partitions[p] = true
		if byGoka[id] != p {
			t.Errorf("%s: our emitter wrote partition %d, Goka's partition %d", id, p, byGoka[id])
		}
	}
	if len(partitions) < 4 {
		t.Fatalf("keys spread over only %d partitions: the check would mean little", len(partitions))
	}
	waitFor(t, 60*time.Second, "balances of deposits from both emitters", func() string {
		for id := range ours {
			if got := getDetails(t, api, id); got.Balance != "3" {
				return fmt.Sprintf("%s: %+v, want balance 3", id, got)
			}
		}
		return ""
	})
	t.Logf("scenario 1: %d keys over %d partitions, the same partition from Goka's emitter and ours", n, len(partitions))
}
