# sbtrain — build, test, demo, benchmarks and results.
#
# OpenBLAS is used when the C toolchain can link it (Debian: libopenblas-dev);
# otherwise everything builds with gonum's pure-Go BLAS.

GO      ?= go
CC      ?= cc
BIN     ?= bin/sbtrain
OPENBLAS := $(shell printf 'int main(void){return 0;}' | $(CC) -x c - -lopenblas -o /dev/null 2>/dev/null && echo openblas)
TAGS    ?= $(OPENBLAS)
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
RACE_PKGS := ./rng/... ./config/... ./allreduce/... ./storage/... ./api/... ./membership/... ./coordinator/... ./trainer/... ./job/... ./cmd/...

.PHONY: build test test-pure demo bench results lint proto minio minio-stop clean help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/sbtrain (with OpenBLAS when available)
	$(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sbtrain
	@./$(BIN) version

test: lint ## the whole test suite: both BLAS builds, race detector on the concurrent packages
	$(GO) test -tags '$(TAGS)' -count=1 ./...
	$(GO) test -count=1 ./nn/...
	$(GO) test -race -count=1 $(RACE_PKGS)

test-pure: ## the whole suite with the pure-Go BLAS
	$(GO) test -count=1 ./...

demo: build ## train the embedded default run on a local cluster (coordinator + 2 trainers) into runs/demo
	./$(BIN) local --workers 2 --out runs/demo

bench: build ## one training step of the DSB 2D net at batch 512, OpenBLAS vs pure Go, on one core
	GOMAXPROCS=1 OPENBLAS_NUM_THREADS=1 $(GO) test -run '^$$' -bench 'DSB2DStep|MLPStep' -benchtime 200x ./nn/
	@if [ -n "$(OPENBLAS)" ]; then GOMAXPROCS=1 OPENBLAS_NUM_THREADS=1 $(GO) test -tags openblas -run '^$$' -bench 'DSB2DStep|MLPStep' -benchtime 200x ./nn/; fi

results: build ## run every example in examples/ and print result, measured, target, pass/fail
	./$(BIN) results --examples examples --out results

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags '$(TAGS)' ./...

proto: ## regenerate the gRPC stubs in api/ from api/control.proto
	@for t in protoc protoc-gen-go protoc-gen-go-grpc; do command -v $$t >/dev/null 2>&1 || { \
		echo "proto: $$t not on PATH; install with:"; \
		echo "  apt-get install protobuf-compiler   (or a protoc release from github.com/protocolbuffers/protobuf)"; \
		echo "  go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12"; \
		echo "  go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"; \
		echo "and put \$$(go env GOPATH)/bin on PATH"; exit 1; }; done
	protoc --proto_path=api --go_out=api --go_opt=paths=source_relative \
		--go-grpc_out=api --go-grpc_opt=paths=source_relative api/control.proto

minio: ## start a MinIO server on 127.0.0.1 for the S3 tests (builds it once)
	.ci/minio.sh start

minio-stop: ## stop the MinIO server started by 'make minio'
	.ci/minio.sh stop

clean: ## remove build outputs
	rm -rf bin
