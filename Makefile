# Lifeboat. `make run` and `make test` are all a fresh machine needs.
GO        ?= go
BIN       := bin
# make run's data directory and address: DATA_DIR=... LISTEN=... on the
# command line, or the vault's own LIFEBOAT_DATA_DIR and LIFEBOAT_LISTEN.
DATA_DIR  ?= $(or $(LIFEBOAT_DATA_DIR),./data)
LISTEN    ?= $(or $(LIFEBOAT_LISTEN),127.0.0.1:8443)
# Tests touch SQLite through cgo and run servers in goroutines: -race where they meet.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build run test test-deps generate check fmt vet templ-check bench clean

all: build

build:
	$(GO) build -o $(BIN)/lifeboat-vault ./web
	$(GO) build -o $(BIN)/lifeboat-agent ./agent

## run: the vault on the embedded defaults (SQLite and TLS material under ./data),
## and a local agent over generated demo VMs (under ./data/demo).
run: build
	DATA_DIR=$(DATA_DIR) LISTEN=$(LISTEN) BIN=$(BIN) scripts/run-demo.sh

## test: installs what the tests need (Chromium for the browser test), then the whole suite.
test: test-deps
	$(GO) test $(TESTFLAGS) ./...

test-deps:
	@scripts/install-test-deps.sh

## generate: templ components → Go (the output is committed).
generate:
	$(GO) tool templ generate -path views

## check: what CI refuses besides failing tests.
check: fmt vet templ-check

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

templ-check:
	@$(GO) tool templ generate -path views >/dev/null 2>&1 || { $(GO) tool templ generate -path views; exit 1; }
	@if [ -n "$$(git status --porcelain -- views)" ]; then echo "templ output is stale; run 'make generate' and commit:"; git status --porcelain -- views; exit 1; fi

## bench: speed against baselines run in the same invocation (dd, rsync, azblob), printed as ratios;
## then a delta cycle's memory and storage reads on a big sparse disk, the RPO of many VMs on one host,
## recovery: a 4-VM plan's failover beside dd and azblob copies, a failback's bytes beside the churn;
## and qemu: delta cycles of a QEMU disk through its dirty bitmap beside filedisk's scan of the same disk.
## BENCH_SIZE=MiB (default 4096) and BENCH_DIR=dir set the disk; needs about 2.5 × its size free.
## BENCH_ONLY=vault: the control plane under simulated hosts (agent/bench/vaultbench.go; BENCH_VAULT_HOSTS, BENCH_VAULT_VMS, BENCH_VAULT_SECONDS).
## BENCH_ONLY=azure|resync|sparse|rpo|recovery|qemu runs one part (BENCH_QEMU_GIB sizes qemu's disk); BENCH_SPARSE_GIB, BENCH_SPARSE_AZURE_GIB,
## BENCH_RPO_VMS, BENCH_RPO_MIB, BENCH_RPO_SECONDS, BENCH_RECOVERY_MIB size the last three
## (agent/bench/sparse.go, rpo.go, recovery.go; recovery needs about 25 × BENCH_RECOVERY_MIB free).
bench:
	$(GO) run ./agent/bench

clean:
	rm -rf $(BIN)
