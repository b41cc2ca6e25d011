# modelcache — see README.md.
GO          ?= go
GOBIN       ?= $(shell $(GO) env GOPATH)/bin
STATICCHECK ?= $(GOBIN)/staticcheck
STATICCHECK_VERSION ?= v0.8.2
DEMO_MODEL  ?= testdata/models/posenet.bf16.safetensors
DEMO_TENSOR ?= Const_61
# Our packages for staticcheck and gofmt: internal/third_party holds a
# patched copy of Badger, kept in upstream's style. go vet covers the copy
# too (./...): our patches live in it, and a user's go vet ./... reaches it.
PKGS         = $(shell $(GO) list ./... | grep -v /internal/third_party/)
# Systems the library and warm must build on (Linux-only features return
# errs.ErrUnsupported there); their tests must compile (go vet).
CROSS       ?= darwin/arm64 darwin/amd64 windows/amd64
CROSS_VET   ?= darwin/arm64 windows/amd64

.PHONY: all build deps demo test check cross fmt-check staticcheck bench bench-rivals fuzz clean

all: build

build:
	$(GO) build -o bin/warm ./cmd/warm

# Warm the bundled model into a temporary cache, then read a tensor back in a
# new process: first from L2 (disk), then from L1 (RAM), and compare the
# bytes with a read straight from the file; then load the whole model twice,
# and run the values example (weights, inputs, intermediates, outputs).
demo:
	@set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(GO) build -o "$$tmp/warm" ./cmd/warm; \
	echo "== warm $(DEMO_MODEL)"; \
	"$$tmp/warm" --dir "$$tmp/cache" $(DEMO_MODEL); \
	echo "== warm get -v -n 2 $(DEMO_MODEL) $(DEMO_TENSOR)   (new process)"; \
	"$$tmp/warm" get --dir "$$tmp/cache" -v -n 2 $(DEMO_MODEL) $(DEMO_TENSOR) 2>&1 > "$$tmp/cached.bin"; \
	echo "== the same tensor through an empty cache, for comparison"; \
	"$$tmp/warm" get --dir "$$tmp/empty" -v $(DEMO_MODEL) $(DEMO_TENSOR) 2>&1 > "$$tmp/source.bin"; \
	cmp "$$tmp/cached.bin" "$$tmp/source.bin"; \
	echo "== $$(wc -c < "$$tmp/cached.bin") bytes, identical to the file's: sha256 $$(sha256sum < "$$tmp/cached.bin" | cut -c1-16)…"; \
	echo "== warm load -n 2 $(DEMO_MODEL)   (the whole model, as a loader reads it: from L2, then L1)"; \
	"$$tmp/warm" load --dir "$$tmp/cache" -n 2 $(DEMO_MODEL); \
	echo "== warm stats"; \
	"$$tmp/warm" stats --dir "$$tmp/cache"; \
	echo "== values: PoseNet's first layers on an image, twice (examples/inference)"; \
	$(GO) run ./examples/inference -dir "$$tmp/values" -model $(DEMO_MODEL)

# The fleet tier's tests start redis-server processes: install it where we
# can (root with apt-get); elsewhere they skip, saying so.
deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; \
	  else echo "note: redis-server not installed; the L3 tests will be skipped"; fi; }

test: deps
	$(GO) vet ./...
	$(GO) test -race -timeout 25m ./...
	$(GO) test -tags purego ./serialize/   # the portable path of the SSE2 code

fmt-check:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './internal/third_party/*')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

staticcheck: $(STATICCHECK)
	$(STATICCHECK) $(PKGS)

# Cross-compile every package for CROSS, and vet (which compiles the tests)
# for CROSS_VET.
cross:
	@set -e; for p in $(CROSS); do \
	  echo "GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build ./..."; \
	  GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build ./...; \
	done; \
	for p in $(CROSS_VET); do \
	  echo "GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet ./..."; \
	  GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) vet ./...; \
	done

check: fmt-check test staticcheck cross

# Benchmarks: codecs, then warm bench against cold disk reads on a generated
# 1 GiB BF16 model (not committed) and the bundled model, locally and with
# the source throttled to network-storage speed. Results go into
# docs/BENCHMARKS.md between the warm-bench markers, charts beside it.
BENCH_DIR ?= $(or $(TMPDIR),/tmp)/modelcache-bench
SYNTHETIC ?= $(BENCH_DIR)/synthetic-1g.safetensors
bench:
	$(GO) test -run '^$$' -bench . -benchtime 20x ./serialize/ ./l1/
	$(GO) test -count=1 -run 'RatioOnRealModels' -v ./serialize/ | grep stored/logical
	mkdir -p $(BENCH_DIR)
	test -f $(SYNTHETIC) || $(GO) run ./internal/tools/genmodel -o $(SYNTHETIC) -size 1GiB
	$(GO) build -o $(BENCH_DIR)/warm ./cmd/warm
	$(BENCH_DIR)/warm bench --runs 3 --markdown docs/BENCHMARKS.md --section local --chart docs/bench-local.svg $(SYNTHETIC) $(DEMO_MODEL)
	$(BENCH_DIR)/warm bench --source-rate 200MB --runs 3 --markdown docs/BENCHMARKS.md --section slow-source --chart docs/bench-slow-source.svg $(SYNTHETIC)

# Run every fuzz target for FUZZTIME each.
FUZZTIME ?= 60s
fuzz:
	$(GO) test ./serialize/ -run '^$$' -fuzz FuzzUnmarshal -fuzztime $(FUZZTIME)
	$(GO) test ./serialize/ -run '^$$' -fuzz FuzzDecodeChunk -fuzztime $(FUZZTIME)
	$(GO) test ./loader/ -run '^$$' -fuzz FuzzParseSafetensors -fuzztime $(FUZZTIME)
	$(GO) test ./server/ -run '^$$' -fuzz FuzzCountRanges -fuzztime $(FUZZTIME)
	$(GO) test ./loader/ -run '^$$' -fuzz FuzzParseGGUF -fuzztime $(FUZZTIME)
	$(GO) test ./loader/ -run '^$$' -fuzz FuzzParseNPY -fuzztime $(FUZZTIME)
	$(GO) test ./loader/ -run '^$$' -fuzz FuzzParseNPZ -fuzztime $(FUZZTIME)
	$(GO) test ./loader/ -run '^$$' -fuzz FuzzParseShardIndex -fuzztime $(FUZZTIME)
	$(GO) test ./loader/ -run '^$$' -fuzz FuzzParseIdentity -fuzztime $(FUZZTIME)
	$(GO) test ./resolve/ -run '^$$' -fuzz FuzzName -fuzztime $(FUZZTIME)
	$(GO) test ./server/ -run '^$$' -fuzz FuzzAllow -fuzztime $(FUZZTIME)
	$(GO) test ./internal/sim/ -run '^$$' -fuzz FuzzDecode -fuzztime $(FUZZTIME)
	$(GO) test ./internal/key/ -run '^$$' -fuzz FuzzParse -fuzztime $(FUZZTIME)
	$(GO) test ./l3/ -run '^$$' -fuzz FuzzDecodeMeta -fuzztime $(FUZZTIME)
	$(GO) test ./l3/ -run '^$$' -fuzz FuzzDecodeRecords -fuzztime $(FUZZTIME)
	$(GO) test ./l2/ -run '^$$' -fuzz FuzzOpenDamagedTable -fuzztime $(FUZZTIME)
	$(GO) test ./tier/ -run '^$$' -fuzz FuzzReadPaths -fuzztime $(FUZZTIME)
	MODELCACHE_MODEL_TIME=$(FUZZTIME) $(GO) test -race -count=1 -timeout 30m ./tier/ -run '^TestReadPaths_Model$$'

# Hit ratios and throughput against rival caches (bench/ is its own module).
bench-rivals:
	cd bench && $(GO) test -count=1 -run HitRatios -v -timeout 30m . | grep '^ *|'
	cd bench && $(GO) test -run '^$$' -bench . -cpu 1,2 .

clean:
	rm -rf bin
