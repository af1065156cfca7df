# Portico's developer entry points. `make test` is the whole gate CI runs.

GO ?= go
# The pure codec packages: they must build for WebAssembly.
CODEC_PKGS := ./protocols ./protocols/links ./protocols/vless ./protocols/anytls ./protocols/vmess ./wasm/api
# Packages with allocation and memory tests (TestXxxAllocs…, TestXxxMemory), run
# without -race (which distorts both).
ALLOC_PKGS := ./gateway ./internal/readwait ./internal/bufpool ./transports/ws ./protocols/vless/internal/v1io ./protocols/vmess ./protocols/vmess/internal/vmessconn ./protocols/vmess/vmessserver ./protocols/anytls/session

.PHONY: test peers vet race allocs norace wasm fuzz-short fuzz build soak bench

test: peers vet race allocs norace wasm fuzz-short
	@echo "make test: all checks passed"

peers:
	./scripts/install-peers.sh
	./scripts/install-workerd.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }

race:
	PORTICO_REQUIRE_PEERS=1 $(GO) test -race -count=1 -timeout 20m ./...

# Allocation and heap tests need a build without -race (it makes sync.Pool
# drop items and adds shadow memory).
allocs:
	$(GO) test -count=1 -run 'Allocs|Memory' $(ALLOC_PKGS)

# Tests that skip under -race because of a data race inside quic-go when a
# client uses 0-RTT (quic-go #4303); they run here without it.
norace:
	$(GO) test -count=1 -run 'ZeroRTT' ./transports/quic

wasm:
	GOOS=js GOARCH=wasm $(GO) build $(CODEC_PKGS)
	GOOS=wasip1 GOARCH=wasm $(GO) build $(CODEC_PKGS)
	GOOS=js GOARCH=wasm $(GO) vet $(CODEC_PKGS) ./wasm/js
	GOOS=wasip1 GOARCH=wasm $(GO) vet $(CODEC_PKGS) ./wasm/wasi
	GOOS=js GOARCH=wasm $(GO) test -count=1 -exec="$$($(GO) env GOROOT)/lib/wasm/go_js_wasm_exec" $(CODEC_PKGS)
	GOOS=js GOARCH=wasm $(GO) build -trimpath -ldflags="-s -w" -o bin/portico.wasm ./wasm/js
	GOOS=wasip1 GOARCH=wasm $(GO) build -trimpath -ldflags="-s -w" -o bin/portico-wasi.wasm ./wasm/wasi
	GOOS=wasip1 GOARCH=wasm $(GO) build -buildmode=c-shared -trimpath -ldflags="-s -w" -o bin/portico-edge.wasm ./wasm/edge/codec
	cp "$$($(GO) env GOROOT)/lib/wasm/wasm_exec.js" bin/
	@ls -l bin/portico.wasm bin/portico-wasi.wasm bin/portico-edge.wasm

fuzz-short:
	./scripts/fuzz.sh 3s

fuzz:
	./scripts/fuzz.sh 2m

build:
	$(GO) build -o bin/portico ./cmd/portico

# The load test of issue #9, not part of `test`: 2,000 tunnels at once over
# every protocol and transport, three rounds, a few minutes at most.
soak:
	PORTICO_SOAK=1 $(GO) test -run '^TestSoak$$' -count=1 -timeout 15m -v ./gateway/

# The benchmark of issue #11, not part of `test`: a sink, `portico run` and a
# `portico client` per row as separate processes on loopback, beside a plain
# TLS relay (the floor), direct connections and v2ray. Stops by itself within
# 10 minutes: the builds, then 9 for the tool, which runs fewer rounds when
# another would not end in time; results in bench-results/ (docs/performance.md
# keeps the table).
bench:
	$(GO) build -o bin/portico ./cmd/portico
	$(GO) build -o bin/portico-bench ./cmd/portico-bench
	bin/portico-bench -portico bin/portico -out bench-results -timeout 9m
