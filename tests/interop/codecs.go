// Package interop holds Goka programs that share a Kafka cluster with the Python wallet
// services: the reference's codecs, a reference processor, and the tests that run them
// against our services (interop_test.go; driven by tests/interop/test_goka_interop.py).
package interop

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"walletinterop/reference"
)

// protoCodec is a Goka codec of one reference message type.
type protoCodec[T any, P interface {
	*T
	proto.Message
}] struct{}

func (protoCodec[T, P]) Encode(value interface{}) ([]byte, error) {
	m, ok := value.(P)
	if !ok {
		return nil, fmt.Errorf("codec of %T: cannot encode a %T", P(nil), value)
	}
	return proto.Marshal(m)
}

func (protoCodec[T, P]) Decode(data []byte) (interface{}, error) {
	m := P(new(T))
	return m, proto.Unmarshal(data, m)
}

// The Go reference's codecs: the "deposit" stream, "balance-table", "above_threshold-table".
type (
	DepositCodec        = protoCodec[reference.DepositRequest, *reference.DepositRequest]
	WalletCodec         = protoCodec[reference.Wallet, *reference.Wallet]
	WalletInfoListCodec = protoCodec[reference.WalletInfoList, *reference.WalletInfoList]
)

// ReferenceFlag is how the Go service reads a wallet's flag: from the last List entry.
func ReferenceFlag(list *reference.WalletInfoList) bool {
	if list == nil || len(list.List) == 0 {
		return false
	}
	return list.List[len(list.List)-1].AboveThreshold
}
