#!/usr/bin/env bash
# Builds (once), starts and stops a bare kube-apiserver with its own etcd on
# 127.0.0.1, so that the manifests in k8s/ are checked by a real API server
# (server-side dry run, strict field validation) without a cluster.
#
#   .ci/kube-apiserver.sh build   build the pinned kube-apiserver into the
#                                 cache if missing (6 to 13 minutes and 2 GB
#                                 of memory on 2 cores the first time)
#   .ci/kube-apiserver.sh start   build if needed, install etcd if missing,
#                                 start etcd and the API server on free ports
#                                 with fresh state, wait until ready, write
#                                 the env file and print its lines
#   .ci/kube-apiserver.sh env     print the env file (export lines) of the running one
#   .ci/kube-apiserver.sh stop    stop both and delete their state
#
# Use:  eval "$(.ci/kube-apiserver.sh start)"  then  make k8s-validate  then
#       .ci/kube-apiserver.sh stop
# start prints only export lines on stdout (progress goes to stderr), so eval
# works; the same lines are in "$SBTRAIN_KUBE_STATE/env". A kubeconfig for
# kubectl is written next to it ($SBTRAIN_TEST_KUBECONFIG).
#
# The server only validates and stores objects: no controllers, no kubelet,
# no scheduler. Authentication is a static token; authorisation is
# AlwaysAllow, which is safe only because everything listens on loopback.
#
# Variables: SBTRAIN_KUBE_STATE (state dir; default
# ${TMPDIR:-/tmp}/sbtrain-kube-$USER).
set -euo pipefail

K8S_VERSION=v1.32.4
# The staging modules (k8s.io/api, apimachinery, ...) that k8s.io/kubernetes
# requires at v0.0.0 are released as v0.<minor>.<patch>.
STAGING_VERSION=v0.32.4
KUBE_DIR="$HOME/.cache/sbtrain/kube-apiserver-$K8S_VERSION"
KUBE_BIN="$KUBE_DIR/kube-apiserver"
STATE="${SBTRAIN_KUBE_STATE:-${TMPDIR:-/tmp}/sbtrain-kube-${USER:-$(id -un)}}"

log() { echo "kube-apiserver.sh: $*" >&2; }

build() {
	if [ -x "$KUBE_BIN" ]; then
		return 0
	fi
	command -v go >/dev/null || { log "go is not on PATH"; exit 1; }
	log "building kube-apiserver $K8S_VERSION into $KUBE_DIR (6 to 13 minutes and 2 GB of memory on 2 cores, the first time)"
	local mod
	mod=$(mktemp -d "${TMPDIR:-/tmp}/sbtrain-kube-build.XXXXXX")
	# shellcheck disable=SC2064 # expand $mod now: it is local
	trap "rm -rf '$mod'; trap - RETURN" RETURN
	# k8s.io/kubernetes is not meant to be required as a module: it has no
	# checksum database entry (GONOSUMDB), and its go.mod requires every
	# staging module at v0.0.0 with replace directives into its own tree,
	# which do not apply to a dependency. A throwaway module that replaces
	# each of them with its release builds the real command.
	export GOFLAGS=-mod=mod GONOSUMDB=k8s.io/kubernetes GOWORK=off
	(
		cd "$mod"
		go mod init sbtrain.invalid/kube-apiserver-build >/dev/null 2>&1
		local gomod
		gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
		[ -f "$gomod" ] || { log "could not download k8s.io/kubernetes@$K8S_VERSION's go.mod"; exit 1; }
		local staging
		staging=$(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1} $1 == "require" && $2 ~ /^k8s\.io\// && $3 == "v0.0.0" {print $2}' "$gomod" | sort -u)
		[ -n "$staging" ] || { log "found no staging modules in $gomod"; exit 1; }
		local m
		for m in $staging; do
			go mod edit -replace "$m=$m@$STAGING_VERSION"
		done
		go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
		# Some mirrors of the checksum database lack an entry for a module
		# (seen: k8s.io/controller-manager); such a module is fetched
		# unverified by the database, loudly, and go.sum still pins it.
		local nosum=k8s.io/kubernetes out missing ok=
		for _ in 1 2 3 4; do
			if out=$(GONOSUMDB=$nosum go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" 2>&1); then
				ok=1
				break
			fi
			missing=$(printf '%s\n' "$out" | sed -n 's|.*verifying module: \([^@ ]*\)@[^ ]*: reading .*/lookup/.*: 404 Not Found.*|\1|p' | sort -u | paste -sd, -)
			[ -n "$missing" ] || break
			log "the checksum database has no entry for $missing; fetching it without one (go.sum still pins it)"
			nosum="$nosum,$missing"
		done
		[ -n "$ok" ] || { printf '%s\n' "$out" >&2; log "go get k8s.io/kubernetes/cmd/kube-apiserver failed"; exit 1; }
		export GONOSUMDB=$nosum
		mkdir -p "$KUBE_DIR"
		CGO_ENABLED=0 go build -trimpath -o "$KUBE_BIN.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
		mv "$KUBE_BIN.tmp" "$KUBE_BIN"
	)
	[ -x "$KUBE_BIN" ] || { log "build finished but $KUBE_BIN is missing"; exit 1; }
	log "built $KUBE_BIN"
}

# etcd is the API server's store; Debian's etcd-server (3.4) is enough.
ensure_etcd() {
	if command -v etcd >/dev/null; then
		return 0
	fi
	log "installing etcd-server"
	if ! command -v apt-get >/dev/null; then
		log "etcd is not on PATH and apt-get is missing: install etcd 3.4 or newer"
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# Packages must not start services (the Debian package would start one
	# etcd on the default ports).
	local policy=/usr/sbin/policy-rc.d added=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
	fi
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
	if [ -n "$added" ]; then
		rm -f "$policy"
	fi
	command -v etcd >/dev/null || { log "etcd-server installed but etcd is not on PATH"; exit 1; }
}

running() {
	[ -f "$STATE/apiserver.pid" ] && kill -0 "$(cat "$STATE/apiserver.pid")" 2>/dev/null
}

port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# pick_ports N prints N distinct free ports.
pick_ports() {
	local want=$1 got=() p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 20000))
		if port_free "$p" && [[ " ${got[*]} " != *" $p "* ]]; then
			got+=("$p")
			if [ "${#got[@]}" -eq "$want" ]; then
				echo "${got[@]}"
				return
			fi
		fi
	done
	log "no free ports found"
	exit 1
}

stop_pid() {
	local f=$1 pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid"
		for _ in $(seq 40); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
	fi
	rm -f "$f"
}

start() {
	if running; then
		log "already running (pid $(cat "$STATE/apiserver.pid"))"
		cat "$STATE/env"
		return 0
	fi
	build
	ensure_etcd
	stop_pid "$STATE/etcd.pid"
	rm -rf "$STATE"
	mkdir -p "$STATE/etcd" "$STATE/certs"
	chmod 700 "$STATE"
	local ports client peer secure
	ports=$(pick_ports 3)
	read -r client peer secure <<<"$ports"

	nohup etcd --name sbtrain --data-dir "$STATE/etcd" \
		--listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
		--listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
		--initial-cluster "sbtrain=http://127.0.0.1:$peer" --initial-cluster-state new \
		--listen-metrics-urls "" --log-level warn \
		>"$STATE/etcd.log" 2>&1 </dev/null &
	echo $! >"$STATE/etcd.pid"

	local token
	token=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
	printf '%s\n' "$token" >"$STATE/token"
	printf '%s,sbtrain-ci,sbtrain-ci,"system:masters"\n' "$token" >"$STATE/tokens.csv"
	chmod 600 "$STATE/token" "$STATE/tokens.csv"
	openssl genrsa -out "$STATE/sa.key" 2048 2>/dev/null
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=sbtrain-ci-apiserver" \
		-addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
		-keyout "$STATE/certs/apiserver.key" -out "$STATE/certs/apiserver.crt" 2>/dev/null

	nohup "$KUBE_BIN" \
		--etcd-servers "http://127.0.0.1:$client" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$secure" \
		--tls-cert-file "$STATE/certs/apiserver.crt" --tls-private-key-file "$STATE/certs/apiserver.key" \
		--token-auth-file "$STATE/tokens.csv" --authorization-mode AlwaysAllow \
		--service-account-issuer https://kubernetes.default.svc \
		--service-account-key-file "$STATE/sa.key" --service-account-signing-key-file "$STATE/sa.key" \
		--service-cluster-ip-range 10.96.0.0/16 \
		--enable-priority-and-fairness=false --profiling=false \
		>"$STATE/apiserver.log" 2>&1 </dev/null &
	echo $! >"$STATE/apiserver.pid"

	local url="https://127.0.0.1:$secure"
	for _ in $(seq 240); do
		if curl -fsS -m 2 --cacert "$STATE/certs/apiserver.crt" -H "Authorization: Bearer $token" \
			"$url/readyz" >/dev/null 2>&1; then
			cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sbtrain-ci
  cluster:
    server: $url
    certificate-authority: $STATE/certs/apiserver.crt
users:
- name: sbtrain-ci
  user:
    tokenFile: $STATE/token
contexts:
- name: sbtrain-ci
  context: {cluster: sbtrain-ci, user: sbtrain-ci}
current-context: sbtrain-ci
EOF
			cat >"$STATE/env" <<EOF
export SBTRAIN_TEST_KUBE_APISERVER=$url
export SBTRAIN_TEST_KUBE_TOKEN_FILE=$STATE/token
export SBTRAIN_TEST_KUBE_CA_FILE=$STATE/certs/apiserver.crt
export SBTRAIN_TEST_KUBECONFIG=$STATE/kubeconfig
EOF
			chmod 600 "$STATE/env" "$STATE/kubeconfig"
			log "kube-apiserver ready at $url (pid $(cat "$STATE/apiserver.pid"), env in $STATE/env)"
			cat "$STATE/env"
			return 0
		fi
		if ! running; then
			log "kube-apiserver exited during start-up; its log:"
			tail -30 "$STATE/apiserver.log" >&2
			log "etcd's log:"
			tail -10 "$STATE/etcd.log" >&2
			stop
			exit 1
		fi
		sleep 0.5
	done
	log "kube-apiserver did not become ready at $url within 120 s; its log:"
	tail -30 "$STATE/apiserver.log" >&2
	stop
	exit 1
}

stop() {
	local was=
	running && was=1
	stop_pid "$STATE/apiserver.pid"
	stop_pid "$STATE/etcd.pid"
	if [ -n "$was" ]; then
		log "stopped kube-apiserver and etcd"
	fi
	rm -rf "$STATE"
}

case "${1:-}" in
build) build ;;
start) start ;;
env) running && cat "$STATE/env" || { log "not running; use: $0 start"; exit 1; } ;;
stop) stop ;;
*)
	echo "usage: $0 build|start|env|stop" >&2
	exit 2
	;;
esac
