//go:build reference_pins

package interop

import (
	"testing"

	"github.com/lovoo/goka"
)

// The Go reference's own pins (go.reference.mod: goka v1.1.7, Sarama 1.38) differ here.

// waitForReady: goka v1.1.7's WaitForReady returns nothing (it waits until the processor
// is ready; a processor that fails makes Run return, which the caller reports).
func waitForReady(p *goka.Processor) error {
	p.WaitForReady()
	return nil
}

// stopped: on Kafka 4 the pinned Sarama's OffsetCommit v1 is refused, so the reference's
// processors end with an error however they stop, and commit nothing: that is what the
// takeover test is about, so it is logged, not failed. The driver checks the groups hold no
// offsets.
func stopped(t *testing.T, group goka.Group, err error) {
	t.Helper()
	if err != nil {
		t.Logf("processor %s (the reference as pinned, which cannot commit on Kafka 4): %v", group, err)
	}
}
