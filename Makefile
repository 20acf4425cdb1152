# ephemera — see README.md. Every target works on a fresh clone.
SHELL        := /bin/bash
GO           ?= go
BIN          := bin
LAMBDA_FLAGS := -tags lambda.norpc -trimpath -ldflags='-s -w'
# Fuzz targets run briefly by `make test` (package:target).
FUZZ_TARGETS := ./broker:FuzzDecodeRequest ./broker/attest:FuzzProofJSON ./broker/attest:FuzzAuthorization \
                ./broker/pgrole:FuzzParseTemplate ./broker/config:FuzzParse ./internal/apigw:FuzzRequest ./internal/apigw:FuzzRequestV1 ./internal/apigw:FuzzDispatcher \
                ./extension/config:FuzzParseCredentials
# Count-based budgets: a duration races Go 1.26's fuzz coordinator (golang/go#75804).
FUZZTIME     ?= 20000x

.PHONY: all build lambdas test unit fuzz lint demo layer bench clean

all: build

## build: compile everything, and the Lambda binaries (linux/arm64, lambda.norpc)
build: lambdas
	$(GO) build ./...

lambdas:
	@set -e; for fn in broker reaper demo; do \
		mkdir -p $(BIN)/$$fn; \
		CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build $(LAMBDA_FLAGS) -o $(BIN)/$$fn/bootstrap ./functions/$$fn; \
	done

## test: vet, unit + integration tests against a real PostgreSQL, short fuzz runs
test: lint unit fuzz

# Tests run in random order (-shuffle=on; the seed is printed, and
# `go test -shuffle=SEED` repeats an order): none may depend on another.
unit:
	$(GO) test -count=1 -shuffle=on -tags lambda.norpc ./...
	$(GO) test -race -count=1 -shuffle=on ./extension/...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $$pkg > /tmp/ephemera-fuzz.log 2>&1 || { cat /tmp/ephemera-fuzz.log; exit 1; }; \
	done

## lint: gofmt and go vet must be clean
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags lambda.norpc ./...

## demo: the whole system on this machine, narrated (no Docker, no AWS)
demo:
	$(GO) run ./cmd/ephemera local

## layer: layer/dist/ephemera-x86_64.zip and ephemera-arm64.zip (reproducible)
layer:
	$(GO) run ./layer/cmd/mklayer -out layer/dist

## bench: Go benchmarks + a bounded loopback load driver against a durable throwaway PostgreSQL;
## prints one table and writes bench/results.json (about 4 minutes)
bench:
	$(GO) run ./bench

clean:
	rm -rf $(BIN) layer/dist bench/results.json
