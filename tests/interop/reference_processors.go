package interop

import (
	"github.com/lovoo/goka"

	"walletinterop/reference"
)

// The Go service's two processors, written the way the reference writes them: float
// balances, and for the threshold a List of the wallet's recent deposits, each carrying
// its window's rolling sum and the sticky flag. Groups and tables are the ones our
// processors use, so one can take over from the other.

const (
	threshold = 10000.0
	window    = int64(120) // seconds: a deposit's window is (t - 120 s, t]
)

// BalanceGroup adds each deposit's Amount to the wallet's Balance.
func BalanceGroup() *goka.GroupGraph { return BalanceGroupNamed("balance") }

// BalanceGroupNamed is BalanceGroup under another group (and table) name: the benchmark runs
// it beside ours on the same input.
func BalanceGroupNamed(group goka.Group) *goka.GroupGraph {
	return goka.DefineGroup(group,
		goka.Input("deposit", DepositCodec{}, func(ctx goka.Context, msg interface{}) {
			d := msg.(*reference.DepositRequest)
			w, _ := ctx.Value().(*reference.Wallet)
			if w == nil {
				w = &reference.Wallet{WalletID: ctx.Key()}
			}
			w.Balance += d.Amount
			ctx.SetValue(w)
		}),
		goka.Persist(WalletCodec{}))
}

// AboveThresholdGroup keeps the deposits of the last window (in arrival order, as the
// reference does) and flags the wallet once a window's sum exceeds the threshold.
func AboveThresholdGroup() *goka.GroupGraph { return AboveThresholdGroupNamed("above_threshold") }

// AboveThresholdGroupNamed is AboveThresholdGroup under another group (and table) name.
func AboveThresholdGroupNamed(group goka.Group) *goka.GroupGraph {
	return goka.DefineGroup(group,
		goka.Input("deposit", DepositCodec{}, func(ctx goka.Context, msg interface{}) {
			d := msg.(*reference.DepositRequest)
			list, _ := ctx.Value().(*reference.WalletInfoList)
			if list == nil {
				list = &reference.WalletInfoList{}
			}
			flagged := ReferenceFlag(list)
			var kept []*reference.WalletInfo
			sum := d.Amount
			for _, e := range list.List {
				if e.CreatedAt > d.CreatedAt-window {
					kept = append(kept, e)
					if e.CreatedAt <= d.CreatedAt {
						sum += e.LastDepositAmount
					}
				}
			}
			flagged = flagged || sum > threshold
			kept = append(kept, &reference.WalletInfo{
				WalletID: ctx.Key(), LastDepositAmount: d.Amount, RollingPeriodCumulative: sum,
				AboveThreshold: flagged, CreatedAt: d.CreatedAt,
			})
			for _, e := range kept {
				e.AboveThreshold = flagged
			}
			ctx.SetValue(&reference.WalletInfoList{List: kept})
		}),
		goka.Persist(WalletInfoListCodec{}))
}
