#!/usr/bin/env bash
# Regenerates reference/reference.pb.go from reference/reference.proto: protoc from Maven
# Central (protoc.pom.xml), protoc-gen-go at the version go.mod pins.
set -euo pipefail
cd "$(dirname "$0")"
cache="${WALLET_CACHE_DIR:-$HOME/.cache/wallet}/protoc"
mkdir -p "$cache"
mvn -q -f protoc.pom.xml dependency:copy-dependencies -DoutputDirectory="$cache" -DincludeTypes=exe
protoc="$(ls "$cache"/protoc-*-linux-x86_64.exe | sort | tail -1)"
chmod +x "$protoc"
go build -o "$cache/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
"$protoc" --plugin=protoc-gen-go="$cache/protoc-gen-go" --go_out=. --go_opt=module=walletinterop \
  -I . reference/reference.proto
echo "regenerated reference/reference.pb.go with $("$protoc" --version)"
