module github.com/wallet/bench/openloop

go 1.26
