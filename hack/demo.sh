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
STATUS_PORT=${DEMO_STATUS_PORT:-18081}  # the public status page, alone on its own port
HEALTH_PORT=18090  # the sample playbook checks http://127.0.0.1:18090/healthz
SMTP_PORT=${DEMO_SMTP_PORT:-18025}  # the demo's mail server: pages and handoffs to the person on call
AM_PORT=${DEMO_ALERTMANAGER_PORT:-19093}
PROM_PORT=${DEMO_PROMETHEUS_PORT:-19090}
LOCALCLUSTER="$PYTHON localcluster/localcluster.py"
KUBECTL=$CLUSTER_DIR/kubectl  # linked by `localcluster up` to kubectl of the cluster's release
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_pidfile() {  # stop_pidfile FILE PATTERN: stop the process we started, if it still is ours
  local pidfile=$1 pattern=$2
  [[ -f $pidfile ]] || return 0
  local pid; pid=$(cat "$pidfile")
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"; then
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    echo "stopped $pattern (pid $pid)"
  fi
  rm -f "$pidfile"
}
stop_operator() { stop_pidfile "$DEMO_DIR/operator.pid" "incident-operator run"; }
stop_health() { stop_pidfile "$DEMO_DIR/healthz.pid" "healthz_server.py"; }
stop_mail() { stop_pidfile "$DEMO_DIR/mail.pid" "demo_mail.py"; }
stop_alertmanager() { stop_pidfile "$DEMO_DIR/alertmanager.pid" "alertmanager"; }
stop_prometheus() { stop_pidfile "$DEMO_DIR/prometheus.pid" "prometheus"; }
wait_http() {  # wait_http URL SECONDS: poll until the URL answers 200
  "$PYTHON" - "$1" "$2" <<'PY'
import sys, time, urllib.request
url, deadline = sys.argv[1], time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(f"{url} did not answer within {sys.argv[2]}s")
PY
}

if [[ ${1:-} == down ]]; then
  stop_operator
  stop_health
  stop_mail
  stop_alertmanager
  stop_prometheus
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

say "Starting the operator on 127.0.0.1:$PORT, its status page on :$STATUS_PORT (log: .demo/operator.log)"
mkdir -p "$DEMO_DIR"
stop_operator
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is in use; run with DEMO_HTTP_PORT=<free port> make demo" >&2
  exit 1
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$STATUS_PORT") 2>/dev/null; then
  echo "port $STATUS_PORT is in use; run with DEMO_STATUS_PORT=<free port> make demo" >&2
  exit 1
fi
"$KUBECTL" create namespace incident-operator --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
TOKEN=$("$PYTHON" -c 'import secrets; print(secrets.token_hex(16))')
"$KUBECTL" -n incident-operator create secret generic alert-token --from-literal=token="$TOKEN" \
  --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
# Namespace demo publishes on the status page; its links point where users reach it (statusPage.baseURL).
# The stand-in service listens on loopback: --allow-egress lets requests reach it at all, and the
# grant lets the Playbooks of namespace demo (private addresses need one, docs/guide/playbooks.md)
# A P1 pages whoever is on call in the schedule `primary` of its namespace, by mail (the demo's
# mail server on loopback); handoffs and roles are told the same way (docs/guide/paging-people.md).
cat >"$DEMO_DIR/config.yaml" <<YAML
statusPage: {namespaces: [demo], baseURL: "http://127.0.0.1:$STATUS_PORT"}
egress:
  namespaces:
    - {namespaces: [demo], allow: [127.0.0.0/8]}
notifications:
  channels:
    - name: mail
      type: email
      smtp: {host: 127.0.0.1, port: $SMTP_PORT, security: none, from: incidents@example.com}
      to: [oncall@example.com]
      events: []
  escalation:
    P1: {levels: [{afterSeconds: 0, schedule: primary, channels: [mail]}]}
oncall: {allowedEmailDomains: [example.com], channels: [mail]}
YAML
stop_mail
rm -rf "$DEMO_DIR/mail"
nohup .venv/bin/python hack/demo_mail.py "$SMTP_PORT" "$DEMO_DIR/mail" >"$DEMO_DIR/mail.log" 2>&1 &
echo $! >"$DEMO_DIR/mail.pid"
nohup .venv/bin/incident-operator run --http-host 127.0.0.1 --http-port "$PORT" --status-port "$STATUS_PORT" \
  --config "$DEMO_DIR/config.yaml" \
  --alert-token-secret incident-operator/alert-token \
  --allow-egress 127.0.0.0/8 >"$DEMO_DIR/operator.log" 2>&1 &
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

say "The service's health endpoint (a local stand-in): http://127.0.0.1:$HEALTH_PORT/healthz"
stop_health
nohup "$PYTHON" hack/healthz_server.py "$HEALTH_PORT" >"$DEMO_DIR/healthz.log" 2>&1 &
echo $! >"$DEMO_DIR/healthz.pid"

say "On call: schedule primary (alice this week; bob takes over in 20 s by an override)"
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
HANDOFF=$(date -u -d '+20 seconds' +%Y-%m-%dT%H:%M:%SZ)
"$KUBECTL" -n demo apply -f - <<YAML
apiVersion: incident-operator.dev/v1alpha1
kind: OnCallSchedule
metadata: {name: primary}
spec:
  timeZone: UTC
  people:
    - {name: alice, email: alice@example.com}
    - {name: bob, email: bob@example.com}
  layers:
    - {name: weekly, start: "$NOW", rotation: P7D, people: [alice, bob]}
  overrides:
    - {person: bob, start: "$HANDOFF", end: "$(date -u -d '+2 hours' +%Y-%m-%dT%H:%M:%SZ)"}
YAML
"$PYTHON" - "$KUBECTL" <<'PY'
import json, subprocess, sys, time
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    out = subprocess.run([sys.argv[1], "-n", "demo", "get", "oncall", "primary", "-o", "json"],
                         capture_output=True, text=True).stdout
    if ((json.loads(out or "{}").get("status") or {}).get("current") or {}).get("person"):
        sys.exit(0)
    time.sleep(0.3)
sys.exit("schedule primary has no status.current within 30s; see .demo/operator.log")
PY
"$KUBECTL" -n demo get oncall

say "GitOps: the platform team's playbook (kubectl apply -f manifests/samples/playbook-service-outage.yaml)"
"$KUBECTL" -n demo create secret generic incident-webhook --from-literal=url="http://127.0.0.1:$HEALTH_PORT/notify" \
  --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
# The Secret's owner shares it with the namespace's playbooks, for this host only
"$KUBECTL" -n demo label --overwrite secret incident-webhook incident-operator.dev/shared-with-playbooks=true >/dev/null
"$KUBECTL" -n demo annotate --overwrite secret incident-webhook incident-operator.dev/allowed-hosts=127.0.0.1 >/dev/null
"$KUBECTL" -n demo apply -f manifests/samples/playbook-service-outage.yaml
# The sample acts on whatever Deployment an incident names, among those that opted in
"$KUBECTL" -n demo label --overwrite deployment web incident-operator.dev/remediate=true >/dev/null
"$KUBECTL" -n demo get playbooks

say "On call: open the incident (kubectl apply -f manifests/samples/incident-service-outage.yaml)"
"$KUBECTL" -n demo apply -f manifests/samples/incident-service-outage.yaml
"$KUBECTL" -n demo wait --for=condition=Resolved incident/web-outage --timeout=180s
"$KUBECTL" -n demo get incidents

say "Timeline of incident web-outage"
"$KUBECTL" -n demo get incident web-outage \
  -o jsonpath='{range .status.timeline[*]}{.time}{"  "}{.type}{"  "}{.message}{"\n"}{end}'

say "The P1 paged the person on call in primary (mail kept in .demo/mail/)"
"$PYTHON" - "$DEMO_DIR/mail" <<'PY'
import sys, time
from pathlib import Path
from email import message_from_bytes
folder, deadline = Path(sys.argv[1]), time.monotonic() + 60
while time.monotonic() < deadline:
    mails = [message_from_bytes(p.read_bytes()) for p in sorted(folder.glob("*alice@example.com.eml"))]
    pages = [m for m in mails if str(m["Subject"]).endswith(": escalated")]
    if pages:
        print(f"to alice@example.com: {pages[0]['Subject']}")
        break
    time.sleep(0.3)
else:
    sys.exit("no page reached alice within 60s; see .demo/operator.log and .demo/mail.log")
PY
"$KUBECTL" -n demo get incident web-outage \
  -o jsonpath='{range .status.escalation.history[*]}level {.level}: {.channels} to {.person} ({.schedule}){"\n"}{end}'

say "Steps, evidence and the restarted pods"
"$KUBECTL" -n demo get incident web-outage \
  -o jsonpath='{range .status.playbook.steps[*]}{.name}{"  "}{.state}{"  attempts="}{.attempts}{"  "}{.message}{"\n"}{end}'
echo "evidence: ConfigMap $("$KUBECTL" -n demo get incident web-outage -o jsonpath='{.status.evidenceRef}')"
"$KUBECTL" -n demo get pods

say "Handoff: bob comes on call; he is told, with the incidents still open in demo"
"$PYTHON" - "$DEMO_DIR/mail" <<'PY'
import sys, time
from pathlib import Path
from email import message_from_bytes
folder, deadline = Path(sys.argv[1]), time.monotonic() + 60
while time.monotonic() < deadline:
    for path in sorted(folder.glob("*bob@example.com.eml")):
        mail = message_from_bytes(path.read_bytes())
        text = "".join(part.get_payload(decode=True).decode() for part in mail.walk()
                       if part.get_content_type() == "text/plain")
        if "You are on call" in text:
            print(f"to bob@example.com: {mail['Subject']}\n{text.strip()}")
            sys.exit(0)
    time.sleep(0.3)
sys.exit("bob was not told of the handoff within 60s; see .demo/operator.log")
PY
"$KUBECTL" -n demo get oncall primary \
  -o jsonpath='{range .status.handoffs[*]}{.at}  {.person} ({.layer}): {.announced}{"\n"}{end}'

say "Alerts: a real Alertmanager (127.0.0.1:$AM_PORT) delivering to the operator's /alertmanager"
AM_DIR="$($LOCALCLUSTER build-alertmanager | tail -n 1)"
stop_alertmanager
cat >"$DEMO_DIR/alertmanager.yml" <<YAML
route: {receiver: incident-operator, group_by: ['...'], group_wait: 0s, group_interval: 1s, repeat_interval: 1m}
receivers:
  - name: incident-operator
    webhook_configs:
      - url: http://127.0.0.1:$PORT/alertmanager
        send_resolved: true
        http_config: {authorization: {type: Bearer, credentials: $TOKEN}}
YAML
nohup "$AM_DIR/alertmanager" --config.file="$DEMO_DIR/alertmanager.yml" --storage.path="$DEMO_DIR/am-data" \
  --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= --log.level=warn \
  >"$DEMO_DIR/alertmanager.log" 2>&1 &
echo $! >"$DEMO_DIR/alertmanager.pid"
wait_http "http://127.0.0.1:$AM_PORT/-/ready" 60
AMTOOL=("$AM_DIR/amtool" "--alertmanager.url=http://127.0.0.1:$AM_PORT")
LABELS=(ServiceDown namespace=demo severity=critical deployment=web job=web)
echo "+ amtool alert add ${LABELS[*]} --annotation='summary=\"web is down\"'"
"${AMTOOL[@]}" alert add "${LABELS[@]}" --annotation='summary="web is down"'
"$PYTHON" - "$KUBECONFIG" <<'PY'
import json, subprocess, sys, time
deadline = time.monotonic() + 90
while time.monotonic() < deadline:
    out = subprocess.run([".localcluster/kubectl", "-n", "demo", "get", "incidents", "-l",
                          "incident-operator.dev/alertname=ServiceDown", "-o", "json"], capture_output=True, text=True)
    items = json.loads(out.stdout or "{}").get("items", [])
    if items and any("waiting for the alert" in c.get("message", "")
                     for c in (items[0].get("status") or {}).get("conditions", [])):
        print(f"incident {items[0]['metadata']['name']} remediated; Monitoring waits for the alert to resolve")
        sys.exit(0)
    time.sleep(0.5)
sys.exit("the alert's incident did not reach Monitoring within 90s; see .demo/operator.log")
PY
ALERT_INCIDENT=$("$KUBECTL" -n demo get incidents -l incident-operator.dev/alertname=ServiceDown -o name)
"$KUBECTL" -n demo get incidents
echo "+ amtool alert add ${LABELS[*]} --end=<now>   (the alert resolves)"
"${AMTOOL[@]}" alert add "${LABELS[@]}" --annotation='summary="web is down"' \
  --end="$(date -u -d '-1 second' +%Y-%m-%dT%H:%M:%SZ)"
"$KUBECTL" -n demo wait --for=condition=Resolved "$ALERT_INCIDENT" --timeout=120s
"$KUBECTL" -n demo get "$ALERT_INCIDENT" \
  -o jsonpath='{range .status.timeline[*]}{.time}{"  "}{.type}{"  "}{.message}{"\n"}{end}'

say "Who may scrape /metrics: ServiceAccount incident-operator/prometheus, bound to ClusterRole incident-operator-metrics-reader"
# The ClusterRole exactly as manifests/install/rbac.yaml ships it (get on the URL /metrics, nothing else)
.venv/bin/python - <<'PY' | "$KUBECTL" apply -f -
import yaml
docs = yaml.safe_load_all(open("manifests/install/rbac.yaml"))
print(yaml.safe_dump(next(d for d in docs if d and d["kind"] == "ClusterRole"
                          and d["metadata"]["name"] == "incident-operator-metrics-reader")))
PY
"$KUBECTL" -n incident-operator create serviceaccount prometheus --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" create clusterrolebinding incident-operator-metrics-reader-prometheus \
  --clusterrole=incident-operator-metrics-reader --serviceaccount=incident-operator:prometheus \
  --dry-run=client -o yaml | "$KUBECTL" apply -f -
(umask 077; "$KUBECTL" -n incident-operator create token prometheus --duration=24h >"$DEMO_DIR/prometheus.token")
echo "token (TokenRequest, 24 h): .demo/prometheus.token"

say "Detection: a real Prometheus (127.0.0.1:$PROM_PORT) with the seed's rules, sending to Alertmanager"
PROM_DIR="$($LOCALCLUSTER build-prometheus | tail -n 1)"
stop_prometheus
.venv/bin/python localcluster/promstack.py rules "$DEMO_DIR/seed-alerts.rules.yaml" >/dev/null
echo "+ promtool check rules (extracted from manifests/monitoring/prometheusrule.yaml)"
"$PROM_DIR/promtool" check rules "$DEMO_DIR/seed-alerts.rules.yaml"
.venv/bin/python localcluster/promstack.py config "$DEMO_DIR/prometheus.yml" \
  --rules "$DEMO_DIR/seed-alerts.rules.yaml" --alertmanager "127.0.0.1:$AM_PORT" \
  --target "incident-operator=127.0.0.1:$PORT,namespace=demo" \
  --token-file "incident-operator=$DEMO_DIR/prometheus.token" >/dev/null
nohup "$PROM_DIR/prometheus" --config.file="$DEMO_DIR/prometheus.yml" --storage.tsdb.path="$DEMO_DIR/prom-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$DEMO_DIR/prometheus.log" 2>&1 &
echo $! >"$DEMO_DIR/prometheus.pid"
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" 60
"$PYTHON" - "$PROM_PORT" <<'PY'
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}/api/v1"
deadline = time.monotonic() + 30
while time.monotonic() < deadline:  # the first scrape of the operator
    up = json.load(urllib.request.urlopen(f"{base}/query?query=up", timeout=5))["data"]["result"]
    if up:
        break
    time.sleep(0.5)
rules = json.load(urllib.request.urlopen(f"{base}/rules", timeout=5))["data"]["groups"]
print("rules:", ", ".join(f"{r['name']} ({r['state']})" for g in rules for r in g["rules"]))
print("up:", ", ".join(f"{s['metric'].get('job')}={s['value'][1]}" for s in up) or "no scrape yet")
PY

say "Metrics: curl -H \"Authorization: Bearer \$(cat .demo/prometheus.token)\" http://127.0.0.1:$PORT/metrics"
"$PYTHON" - "$PORT" "$DEMO_DIR/prometheus.token" <<'PY'
import sys, urllib.error, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/metrics"
try:
    urllib.request.urlopen(url, timeout=5)
except urllib.error.HTTPError as exc:
    print(f"without a token: {exc.code} {exc.read().decode().strip()}")
token = open(sys.argv[2]).read().strip()
request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
text = urllib.request.urlopen(request, timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith("incident_operator_") and line.split()[-1] != "0.0" and "_bucket" not in line:
        print(line)
PY

say "After the incident, with the kubectl plugin (kubectl incident, from .venv/bin)"
PLUGIN_PATH="$ROOT/.venv/bin:$PATH"
incident() { echo "+ kubectl incident $*"; PATH=$PLUGIN_PATH "$KUBECTL" incident "$@"; }
incident ack web-outage -n demo --commander alice
incident resolve web-outage -n demo --summary "restarted web and waited for it to be ready" \
  --root-cause "the health endpoint hung after a bad config push"
incident action add web-outage -n demo --id config-check --title "validate config before pushing" \
  --owner bob --due "$(date -u -d '+14 days' +%Y-%m-%d)"
"$PYTHON" - "$KUBECTL" <<'PY'
import subprocess, sys, time
deadline = time.monotonic() + 60
while time.monotonic() < deadline:  # the operator rewrites the post-mortem from the spec
    out = subprocess.run([sys.argv[1], "-n", "demo", "get", "configmap", "web-outage-postmortem", "-o",
                          "jsonpath={.data.postmortem\\.md}"], capture_output=True, text=True).stdout
    if "config-check" in out and "bad config push" in out:
        sys.exit(0)
    time.sleep(0.5)
sys.exit("the post-mortem was not updated within 60s; see .demo/operator.log")
PY
say "The post-mortem draft (ConfigMap web-outage-postmortem): kubectl incident postmortem web-outage"
PATH=$PLUGIN_PATH "$KUBECTL" incident postmortem web-outage -n demo
say "This month's report: kubectl incident report --month $(date -u +%Y-%m) -n demo"
PATH=$PLUGIN_PATH "$KUBECTL" incident report --month "$(date -u +%Y-%m)" -n demo

say "A drill (seed 8.2): scale web to zero on purpose, let the response fix it, score it"
"$KUBECTL" -n demo apply -f - <<'YAML'
apiVersion: incident-operator.dev/v1alpha1
kind: Playbook
metadata: {name: drill-heal-web}
spec:
  match: {severities: [P4]}
  stabilizationSeconds: 2
  steps:
    - {name: scale-back, scale: {target: {kind: Deployment, name: web}, replicas: 3}}
    - {name: wait-web, waitReady: {target: {kind: Deployment, name: web}}, timeoutSeconds: 60}
---
apiVersion: incident-operator.dev/v1alpha1
kind: Drill
metadata: {name: web-outage-drill}
spec:
  scenario: {scaleToZero: {target: {kind: Deployment, name: web}}}
  incident: {severity: P4, title: "Drill: web is down", playbookRef: {name: drill-heal-web}}
  expect: {mitigatedWithinSeconds: 60, resolvedWithinSeconds: 120}
  schedule: "0 10 * * 1"     # Mondays 10:00 UTC; run now with kubectl incident drill run
YAML
incident drill run web-outage-drill -n demo
"$PYTHON" - "$KUBECTL" <<'PY'
import json, subprocess, sys, time
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    out = subprocess.run([sys.argv[1], "-n", "demo", "get", "drill", "web-outage-drill", "-o", "json"],
                         capture_output=True, text=True).stdout
    runs = (json.loads(out or "{}").get("status") or {}).get("runs") or []
    if runs and runs[-1]["result"] != "Running":
        run = runs[-1]
        print(f"drill run {run['id']}: {run['result']} "
              f"(mitigated after {run.get('timeToMitigateSeconds')}s, resolved after {run.get('timeToResolveSeconds')}s"
              f"{'; ' + '; '.join(run['reasons']) if run.get('reasons') else ''})")
        sys.exit(0)
    time.sleep(1)
sys.exit("the drill did not finish within 180s; see .demo/operator.log")
PY
"$KUBECTL" -n demo get drills

say "The public status page, on its own port: http://127.0.0.1:$STATUS_PORT/status (also /status.json, /status/feed.atom)"
incident update web-outage -n demo "The website was unavailable for a few minutes; it works again." --public
echo "open http://127.0.0.1:$STATUS_PORT/status in a browser (namespace demo is in statusPage.namespaces)"

cat <<MSG

The cluster, the operator, Alertmanager and Prometheus (http://127.0.0.1:$PROM_PORT) keep running. Use them with:
  export $KUBECONFIG_LINE
  ${KUBECTL#"$ROOT"/} -n demo get incidents,playbooks,deploy,pods
  ${KUBECTL#"$ROOT"/} -n demo describe incident web-outage     # conditions and Events
  ${AMTOOL[*]} alert add ServiceDown namespace=demo severity=critical
  curl -H "Authorization: Bearer \$(cat .demo/prometheus.token)" http://127.0.0.1:$PORT/metrics
The plugin (put .venv/bin on PATH): kubectl incident list -n demo, kubectl incident --help
Close an incident after the review:
  PATH=.venv/bin:\$PATH ${KUBECTL#"$ROOT"/} incident close web-outage -n demo
Stop everything with:
  make demo-down
MSG
