//go:build !reference_pins

package interop

import (
	"testing"

	"github.com/lovoo/goka"
)

// waitForReady: goka v1.1.15's WaitForReady reports a processor that failed to start.
func waitForReady(p *goka.Processor) error { return p.WaitForReady() }

// stopped: a processor that stopped gracefully returns no error, its offsets committed.
func stopped(t *testing.T, group goka.Group, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("processor %s: %v", group, err)
	}
}
