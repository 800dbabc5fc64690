#!/usr/bin/env bash
# `make demo`: start the local cluster, install the CRDs, run the operator, show the cluster.
# `make demo-down` (this script with "down"): stop the operator and the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/.localcluster}
DEMO_DIR=$ROOT/.demo
PORT=${DEMO_HTTP_PORT:-18080}
LOCALCLUSTER="$PYTHON localcluster/localcluster.py"
KUBECTL=$CLUSTER_DIR/kubectl  # linked by `localcluster up` to kubectl of the cluster's release
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_operator() {
  local pidfile=$DEMO_DIR/operator.pid
  [[ -f $pidfile ]] || return 0
  local pid; pid=$(cat "$pidfile")
  # Only stop the process we started: check it still runs our console script.
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "incident-operator run"; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stopped the operator (pid $pid)"
  fi
  rm -f "$pidfile"
}

if [[ ${1:-} == down ]]; then
  stop_operator
  $LOCALCLUSTER down --dir "$CLUSTER_DIR"
  rm -rf "$DEMO_DIR"
  exit 0
fi

say "Starting the local Kubernetes cluster (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)"
KUBECONFIG_LINE=$($LOCALCLUSTER up --dir "$CLUSTER_DIR" | tail -n 1)
export "${KUBECONFIG_LINE?}"
echo "$KUBECONFIG_LINE"

say "Installing the CRDs: kubectl apply -f crds/"
"$KUBECTL" apply -f crds/
"$KUBECTL" wait --for=condition=Established crd --all --timeout=60s

say "Starting the operator on 127.0.0.1:$PORT (log: .demo/operator.log)"
mkdir -p "$DEMO_DIR"
stop_operator
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is in use; run with DEMO_HTTP_PORT=<free port> make demo" >&2
  exit 1
fi
nohup .venv/bin/incident-operator run --http-host 127.0.0.1 --http-port "$PORT" >"$DEMO_DIR/operator.log" 2>&1 &
echo $! >"$DEMO_DIR/operator.pid"
.venv/bin/python - "$PORT" "$(cat "$DEMO_DIR/operator.pid")" <<'PY'
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if not os.path.exists(f"/proc/{pid}"):
        sys.exit("the operator exited; see .demo/operator.log")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            if resp.status == 200:
                print(f"operator ready: http://127.0.0.1:{port}/readyz")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit("the operator did not become ready within 60s; see .demo/operator.log")
PY

say "A workload to respond to: deployment web (3 replicas) in namespace demo"
"$KUBECTL" create namespace demo --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" -n demo create deployment web --image=registry.example/web:1 --replicas=3 --dry-run=client -o yaml \
  | "$KUBECTL" apply -f -
"$KUBECTL" -n demo rollout status deployment/web --timeout=90s

say "kubectl get nodes,deploy,pods"
"$KUBECTL" get nodes
"$KUBECTL" -n demo get deploy,pods -o wide

say "Opening a sample incident: kubectl apply -f manifests/samples/incident-service-outage.yaml"
"$KUBECTL" -n demo apply -f manifests/samples/incident-service-outage.yaml
"$KUBECTL" -n demo get incidents
echo "(Incidents get a phase once the remediation engine lands; today the operator only serves /healthz and /readyz.)"

cat <<MSG

The cluster and the operator keep running. Use them with:
  export $KUBECONFIG_LINE
  ${KUBECTL#"$ROOT"/} -n demo get incidents,deploy,pods
Stop everything with:
  make demo-down
MSG
