#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests in deploy/k8s: no cluster needed.
#
#   tests/deploy/validate.sh
#
# Renders each overlay with `kubectl kustomize` (kustomize v5, as in kubectl
# 1.27+; a standalone `kustomize` binary is used when kubectl is missing) and
# validates every object strictly with validate.mjs: the Kubernetes OpenAPI
# schemas shipped by the npm package kubernetes-models, plus a check that
# rejects unknown (misspelled) fields; the Prometheus Operator's
# ServiceMonitor and PrometheusRule (the monitoring overlay) against
# hand-written schemas in validate.mjs, as strictly. Checks that the metrics
# port is wired end to end (monitoring.mjs wiring), how the serving
# replicas of the serving and serving-tls overlays fit together and stay
# apart from the primary (serving.mjs), how the data-parallel workers of the
# distributed overlay fit together with the primary, their coordinator
# (workers.mjs), the alerting rules with
# `promtool check rules` and their behaviour with `promtool test rules`
# (alerts.test.yaml). Checks the secure defaults of every overlay
# (security.mjs: every pod's and container's hardening, tokens,
# NetworkPolicy sources, TLS wiring, the replicas' token and way to the
# primary, and with TLS how they check the primary's certificate, the
# workers' token and way to the coordinator and TCP between the ranks), that
# the workers on the gpu overlay need a GPU each, and that the
# serving-tls component renders only in its
# place after the tls and serving components. Checks the
# Dockerfiles' syntax (lint-dockerfiles.mjs), that they agree with the
# manifests, and that their build stages install every package CMake
# requires (packages.mjs; the image itself is built by
# scripts/build-image, not here). Then
# corrupts the rendered manifests, the rules and a Dockerfile on purpose and
# asserts that the checks reject them, so a validator that passes everything
# cannot go unnoticed.
#
# Installs its npm packages (package-lock.json) into tests/deploy/node_modules
# with `npm ci` when they are missing or older than the lock file.
# Prints "ok - ..." / "FAIL - ..." per check and ends with "N passed, M failed";
# exits 1 when a check failed, 2 when a tool is missing.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

die() { echo "validate.sh: $*" >&2; exit 2; }

command -v node >/dev/null || die "node (Node.js >= 18) is required"
command -v npm >/dev/null || die "npm is required"
if command -v "${KUBECTL:-kubectl}" >/dev/null; then
  render() { "${KUBECTL:-kubectl}" kustomize "$1"; }
elif command -v kustomize >/dev/null; then
  render() { kustomize build "$1"; }
else
  die "kubectl (1.27 or newer, for its built-in kustomize v5) or kustomize is required"
fi
# promtool ships with Prometheus (Debian package `prometheus`, which
# scripts/install-deps installs); PROMTOOL overrides the one on PATH.
promtool=${PROMTOOL:-promtool}
command -v "$promtool" >/dev/null ||
  die "promtool is required to check the alerting rules (Debian: apt-get install prometheus; scripts/install-deps installs it)"

if [[ ! -d "$here/node_modules" || "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]]; then
  echo "== npm ci (tests/deploy/node_modules)"
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci failed"
fi

validator=(node "$here/validate.mjs")
work=$(mktemp -d "${TMPDIR:-/tmp}/transferd-deploy-XXXXXX")
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
pass() { echo "ok - $*"; passed=$((passed + 1)); }
fail() { echo "FAIL - $*"; failed=$((failed + 1)); }

# check DESCRIPTION COMMAND...: passes when COMMAND exits 0; its output is
# shown only on failure.
check() {
  local what=$1; shift
  if "$@" >"$work/out" 2>&1; then
    pass "$what"
  else
    fail "$what"
    sed 's/^/    /' "$work/out"
  fi
}

# contains FILE TEXT: the rendered file has a line with TEXT (fixed string).
contains() { grep -qF -- "$2" "$1"; }

echo "== strictness self-check"
check "every field kubernetes-models declares is seen by the unknown-field check" \
  "${validator[@]}" --self-check

# monitoring: the cpu overlay plus deploy/k8s/components/monitoring; tls:
# the cpu overlay plus deploy/k8s/components/tls; serving: the cpu overlay
# plus deploy/k8s/components/serving; serving-tls: the cpu overlay plus the
# components tls, serving and serving-tls; distributed: the cpu overlay plus
# deploy/k8s/components/workers.
for overlay in cpu gpu monitoring tls serving serving-tls distributed; do
  echo "== overlay $overlay"
  out="$work/$overlay.yaml"
  if render "deploy/k8s/overlays/$overlay" >"$out" 2>"$work/render.err"; then
    pass "kustomize renders deploy/k8s/overlays/$overlay"
  else
    fail "kustomize renders deploy/k8s/overlays/$overlay"
    sed 's/^/    /' "$work/render.err"
    continue
  fi
  # The validator reads stdin here, as in `kubectl kustomize ... | validate.mjs`.
  if "${validator[@]}" <"$out" >"$work/out" 2>&1; then
    pass "$overlay: all $(grep -c '^ok ' "$work/out") objects valid ($(sed -n 's/^ok //p' "$work/out" | paste -sd' '))"
  else
    fail "$overlay: objects valid"
    sed 's/^/    /' "$work/out"
  fi
  case $overlay in
    cpu)
      check "cpu: image transferd:cpu, TRANSFERD_DEVICE cpu, no GPU" \
        bash -c '! grep -q "nvidia.com/gpu" "$1" && grep -qF "image: transferd:cpu" "$1" && grep -qF "TRANSFERD_DEVICE: cpu" "$1"' _ "$out"
      ;;
    gpu)
      check "gpu: image transferd:cuda, TRANSFERD_DEVICE cuda:0, one nvidia.com/gpu, GPU node selector and toleration" \
        bash -c 'grep -qF "image: transferd:cuda" "$1" && grep -qF "TRANSFERD_DEVICE: cuda:0" "$1" && grep -qF "nvidia.com/gpu: 1" "$1" && grep -qF "nvidia.com/gpu.present: \"true\"" "$1" && grep -qF "key: nvidia.com/gpu" "$1"' _ "$out"
      ;;
    monitoring)
      # The cpu overlay's objects are all there, plus exactly the two
      # monitoring ones: the component adds, it does not replace.
      check "monitoring: the cpu overlay's objects plus one ServiceMonitor and one PrometheusRule, image transferd:cpu" \
        bash -c '[[ $(grep -c "^kind: " "$1") -eq $(( $(grep -c "^kind: " "$2") + 2 )) ]] &&
          [[ $(grep -cx "kind: ServiceMonitor" "$1") -eq 1 && $(grep -cx "kind: PrometheusRule" "$1") -eq 1 ]] &&
          grep -qF "image: transferd:cpu" "$1" && grep -qE "^ +(- )?interval: 15s$" "$1"' _ "$out" "$work/cpu.yaml"
      ;;
    tls)
      check "tls: the cpu overlay's objects plus one cert-manager Certificate, image transferd:cpu" \
        bash -c '[[ $(grep -c "^kind: " "$1") -eq $(( $(grep -c "^kind: " "$2") + 1 )) ]] &&
          [[ $(grep -cx "kind: Certificate" "$1") -eq 1 ]] && grep -qF "image: transferd:cpu" "$1"' _ "$out" "$work/cpu.yaml"
      ;;
    serving)
      # The primary stays: the cpu overlay's objects plus the component's
      # five; the replicas run the primary's image (the component's
      # replacement), on the cpu overlay's device.
      check "serving: the cpu overlay's objects plus a Deployment, Service, NetworkPolicy, PodDisruptionBudget and HorizontalPodAutoscaler; both servers on image transferd:cpu, TRANSFERD_DEVICE cpu" \
        bash -c '[[ $(grep -c "^kind: " "$1") -eq $(( $(grep -c "^kind: " "$2") + 5 )) ]] &&
          for k in Deployment PodDisruptionBudget HorizontalPodAutoscaler; do [[ $(grep -cx "kind: $k" "$1") -eq 1 ]] || exit 1; done &&
          [[ $(grep -cx "kind: Service" "$1") -eq 2 && $(grep -cx "kind: NetworkPolicy" "$1") -eq 2 && $(grep -cx "kind: StatefulSet" "$1") -eq 1 ]] &&
          [[ $(grep -cE "^ +image: transferd:cpu$" "$1") -eq 2 ]] && grep -qF "TRANSFERD_DEVICE: cpu" "$1" && ! grep -q "nvidia.com/gpu" "$1"' _ "$out" "$work/cpu.yaml"
      ;;
    serving-tls)
      # The serving overlay's objects plus two Certificates, one per server
      # (the replicas never get the primary's key); both servers on the
      # primary's image.
      check "serving-tls: the serving overlay's objects plus two cert-manager Certificates (transferd, transferd-serving); both servers on image transferd:cpu" \
        bash -c '[[ $(grep -c "^kind: " "$1") -eq $(( $(grep -c "^kind: " "$2") + 2 )) ]] &&
          [[ $(grep -cx "kind: Certificate" "$1") -eq 2 && $(grep -cx "kind: Deployment" "$1") -eq 1 ]] &&
          grep -qx "  name: transferd-serving" "$1" && [[ $(grep -cE "^ +image: transferd:cpu$" "$1") -eq 2 ]]' _ "$out" "$work/serving.yaml"
      ;;
    distributed)
      # The primary stays (it becomes the coordinator): the cpu overlay's
      # objects plus the component's three; the workers run the primary's
      # image (the component's replacement), on the cpu overlay's device.
      check "distributed: the cpu overlay's objects plus a StatefulSet, a headless Service and a NetworkPolicy (the workers); both StatefulSets on image transferd:cpu, TRANSFERD_DEVICE cpu, no GPU" \
        bash -c '[[ $(grep -c "^kind: " "$1") -eq $(( $(grep -c "^kind: " "$2") + 3 )) ]] &&
          [[ $(grep -cx "kind: StatefulSet" "$1") -eq 2 && $(grep -cx "kind: Service" "$1") -eq 2 && $(grep -cx "kind: NetworkPolicy" "$1") -eq 2 ]] &&
          grep -qx "  clusterIP: None" "$1" && grep -qx "  name: transferd-worker" "$1" &&
          [[ $(grep -cE "^ +image: transferd:cpu$" "$1") -eq 2 ]] && grep -qF "TRANSFERD_DEVICE: cpu" "$1" && ! grep -q "nvidia.com/gpu" "$1"' _ "$out" "$work/cpu.yaml"
      ;;
  esac
  case $overlay in
    serving | serving-tls)
      # serving.mjs: Service, PodDisruptionBudget, autoscaler and probes of
      # the replicas fit together and leave the primary alone.
      if node "$here/serving.mjs" <"$out" >"$work/out" 2>&1; then
        pass "$overlay: replicas wired ($(cat "$work/out"))"
      else
        fail "$overlay: replicas wired"
        sed 's/^/    /' "$work/out"
      fi
      ;;
    distributed)
      # workers.mjs: the workers' StatefulSet, headless Service, names,
      # addresses and data dirs, and the coordinator's rendezvous.
      if node "$here/workers.mjs" <"$out" >"$work/out" 2>&1; then
        pass "$overlay: workers wired ($(cat "$work/out"))"
      else
        fail "$overlay: workers wired"
        sed 's/^/    /' "$work/out"
      fi
      ;;
  esac
  # Secure by default (security.mjs): tokens from a mounted Secret, ingress
  # only from labelled clients (and Prometheus's namespace on the metrics
  # port), and for tls the certificate's Secret and probes on the plaintext
  # health port (for serving-tls, of the primary and of the replicas, and
  # the replicas' TLS to the primary); for distributed, the workers' token
  # and way to the coordinator, and all TCP between the ranks (Gloo).
  sec_flags=()
  [[ $overlay == monitoring ]] && sec_flags=(--monitoring)
  [[ $overlay == tls ]] && sec_flags=(--tls)
  [[ $overlay == serving ]] && sec_flags=(--serving)
  [[ $overlay == serving-tls ]] && sec_flags=(--tls --serving)
  [[ $overlay == distributed ]] && sec_flags=(--workers)
  if node "$here/security.mjs" "${sec_flags[@]}" <"$out" >"$work/out" 2>&1; then
    pass "$overlay: secure defaults ($(cat "$work/out"))"
  else
    fail "$overlay: secure defaults"
    sed 's/^/    /' "$work/out"
  fi
  # Every overlay serves metrics: TRANSFERD_HTTP_LISTEN -> container port
  # http -> Service port http -> NetworkPolicy (-> ServiceMonitor).
  if node "$here/monitoring.mjs" wiring <"$out" >"$work/out" 2>&1; then
    pass "$overlay: metrics port wired ($(cat "$work/out"))"
  else
    fail "$overlay: metrics port wired"
    sed 's/^/    /' "$work/out"
  fi
done

# The PrometheusRule's spec.groups is a Prometheus rule file: promtool parses
# its PromQL and annotation templates, and runs the unit tests of
# alerts.test.yaml on it (those without the annotations, see there).
echo "== alerting rules (promtool)"
mon="$work/monitoring.yaml"
mkdir -p "$work/rules"
if [[ -s "$mon" ]] && node "$here/monitoring.mjs" rules <"$mon" >"$work/rules/all.yaml" 2>"$work/out"; then
  check "promtool check rules: the PrometheusRule's $(grep -c -- '- alert:' "$work/rules/all.yaml") alerts parse (PromQL, templates)" \
    "$promtool" check rules "$work/rules/all.yaml"
  node "$here/monitoring.mjs" rules --no-annotations <"$mon" >"$work/rules/transferd.yaml"
  cp "$here/alerts.test.yaml" "$work/rules/alerts.test.yaml"
  check "promtool test rules: the alerts fire and stay quiet as tests/deploy/alerts.test.yaml expects" \
    "$promtool" test rules "$work/rules/alerts.test.yaml"
else
  fail "extract the PrometheusRule's rules from the monitoring overlay"
  sed 's/^/    /' "$work/out"
fi

# Building an image takes a full Release build (scripts/build-image, not part
# of this test): check the Dockerfiles' syntax, that they agree with the
# manifests (user, port, data dir, listen address, token file) and that
# their build stages install what CMake requires.
echo "== Dockerfiles"
for df in deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda; do
  check "$df: syntax (dockerfile-utils)" node "$here/lint-dockerfiles.mjs" "$df"
  check "$df: USER 10001, EXPOSE 50051, VOLUME and TRANSFERD_DATA_DIR /var/lib/transferd, listens on 0.0.0.0:50051, JSON logs" \
    bash -c 'grep -qx "USER 10001:10001" "$1" && grep -qx "EXPOSE 50051" "$1" &&
      grep -qxF "VOLUME [\"/var/lib/transferd\"]" "$1" && grep -qF "TRANSFERD_DATA_DIR=/var/lib/transferd" "$1" &&
      grep -qF "TRANSFERD_LISTEN=0.0.0.0:50051" "$1" && grep -qF "TRANSFERD_LOG_FORMAT=json" "$1" &&
      grep -qxF "ENTRYPOINT [\"/usr/local/bin/transferd\"]" "$1" && grep -q -- "--uid 10001 --gid 10001" "$1"' _ "$df"
done
# One package list (scripts/packages) for scripts/install-deps and both
# images' build stages, and every CMake requirement in it (packages.mjs).
check "every package CMake requires is installed by scripts/install-deps and both Dockerfiles' build stages" \
  node "$here/packages.mjs" deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda
check "Dockerfiles: tokens on by default at the path deploy/k8s mounts (TRANSFERD_TOKEN_FILE=/etc/transferd/secrets/tokens)" \
  grep -qF "TRANSFERD_TOKEN_FILE=/etc/transferd/secrets/tokens" deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda
check ".dockerignore keeps build trees, data dirs, .git and node_modules out of the context" \
  bash -c 'for p in .git build/ "build-*/" transferd-data/ tests/deploy/node_modules/; do grep -qxF -- "$p" .dockerignore || { echo "missing: $p"; exit 1; }; done'
if [[ -s "$work/cpu.yaml" ]]; then
  check "manifests run the pod as the image's user (runAsUser/runAsGroup/fsGroup 10001)" \
    bash -c 'for f in runAsUser runAsGroup fsGroup; do grep -qxF "        $f: 10001" "$1" || { echo "no $f: 10001"; exit 1; }; done' _ "$work/cpu.yaml"
fi

# Negative checks: each corrupts a rendered overlay ($src: cpu, then
# monitoring) with sed and expects the validator to fail, naming what is
# wrong (so it failed for that reason).
echo "== negative checks (the validator must reject these)"
src="$work/cpu.yaml"
# reject DESCRIPTION SED-SCRIPT EXPECTED-TEXT-IN-ERROR
reject() {
  local what=$1 script=$2 expect=$3 bad="$work/bad.yaml"
  if [[ ! -s "$src" ]]; then fail "$what (no rendered $(basename "$src" .yaml) overlay)"; return; fi
  sed -e "$script" "$src" >"$bad"
  if cmp -s "$src" "$bad"; then fail "$what (the sed script changed nothing)"; return; fi
  if "${validator[@]}" <"$bad" >"$work/out" 2>&1; then
    fail "$what: the validator accepted it"
    sed 's/^/    /' "$work/out"
  elif ! grep -qF -- "$expect" "$work/out"; then
    fail "$what: rejected, but the error does not mention '$expect'"
    sed 's/^/    /' "$work/out"
  else
    pass "$what: rejected ($(grep -m1 '^INVALID' "$work/out" | cut -c1-140))"
  fi
}
reject "misspelled container field readinessProbee" \
  's/^\( *\)readinessProbe:/\1readinessProbee:/' "readinessProbee"
reject "misspelled container field imagePullPolicyy" \
  's/^\( *\)imagePullPolicy:/\1imagePullPolicyy:/' "imagePullPolicyy"
reject "misspelled nested field (probe failureThresholdd)" \
  '0,/failureThreshold:/s/failureThreshold:/failureThresholdd:/' "failureThresholdd"
reject "misspelled top-level field (spec -> spc in the Service)" \
  '/^kind: Service$/,/^---/s/^spec:/spc:/' "unknown field spc"
reject "wrong type (containerPort as a string)" \
  's/containerPort: 50051/containerPort: "50051"/' "must be integer"
reject "invalid enum (imagePullPolicy Sometimes)" \
  's/imagePullPolicy: IfNotPresent/imagePullPolicy: Sometimes/' "must be equal to one of the allowed values"
reject "unknown kind (NetworkPolicyy)" \
  's/^kind: NetworkPolicy$/kind: NetworkPolicyy/' "unknown kind"
# The serving overlay's kinds, as strictly.
src="$work/serving.yaml"
reject "HorizontalPodAutoscaler: misspelled target field averageUtilisation" \
  's/^\( *\)averageUtilization:/\1averageUtilisation:/' "averageUtilisation"
reject "PodDisruptionBudget: misspelled field maxUnavailible" \
  '/^kind: PodDisruptionBudget$/,/^---/s/^  maxUnavailable:/  maxUnavailible:/' "unknown field spec.maxUnavailible"
reject "HorizontalPodAutoscaler: wrong type (maxReplicas as a string)" \
  's/^  maxReplicas: 10$/  maxReplicas: "10"/' "must be integer"
# The custom resources: hand-written schemas in validate.mjs, not skipped.
src="$work/monitoring.yaml"
reject "ServiceMonitor: misspelled endpoint field intervall" \
  '/^kind: ServiceMonitor$/,/^---/s/^\( *\)interval:/\1intervall:/' "unknown field spec.endpoints[0].intervall"
reject "ServiceMonitor: interval not a duration (15 seconds)" \
  '/^kind: ServiceMonitor$/,/^---/s/interval: 15s/interval: 15 seconds/' "spec.endpoints[0].interval must match"
reject "ServiceMonitor: misspelled selector field matchLabelz" \
  '/^kind: ServiceMonitor$/,/^---/s/^\( *\)matchLabels:/\1matchLabelz:/' "unknown field spec.selector.matchLabelz"
reject "PrometheusRule: misspelled top-level field (spec -> spc)" \
  '/^kind: PrometheusRule$/,/^---/s/^spec:/spc:/' "unknown field spc"
reject "PrometheusRule: alert without a severity label" \
  '/^kind: PrometheusRule$/,/^---/{0,/severity: critical/s/severity: critical/priority: critical/}' "labels.severity must be one of"
reject "PrometheusRule: unknown apiVersion (monitoring.coreos.com/v2)" \
  '/^apiVersion: monitoring.coreos.com\/v1$/{N;s/v1\nkind: PrometheusRule$/v2\nkind: PrometheusRule/}' "unknown kind monitoring.coreos.com/v2/PrometheusRule"

# The security properties: each corruption is valid Kubernetes, so only
# security.mjs can catch it.
# reject_security DESCRIPTION SOURCE SED-SCRIPT EXPECTED-TEXT [FLAGS...]
reject_security() {
  local what=$1 from=$2 script=$3 expect=$4 bad="$work/bad.yaml"
  shift 4
  if [[ ! -s "$from" ]]; then fail "$what (no rendered $(basename "$from" .yaml) overlay)"; return; fi
  sed -e "$script" "$from" >"$bad"
  if cmp -s "$from" "$bad"; then fail "$what (the sed script changed nothing)"; return; fi
  if node "$here/security.mjs" "$@" <"$bad" >"$work/out" 2>&1; then
    fail "$what: security.mjs accepted it"
  elif ! grep -qF -- "$expect" "$work/out"; then
    fail "$what: rejected, but the error does not mention '$expect'"
    sed 's/^/    /' "$work/out"
  else
    pass "$what: rejected ($(cut -c1-140 "$work/out" | head -1))"
  fi
}
reject_security "no token file (TRANSFERD_TOKEN_FILE removed)" "$work/cpu.yaml" \
  '/TRANSFERD_TOKEN_FILE:/d' "TRANSFERD_TOKEN_FILE is not set"
reject_security "TRANSFERD_INSECURE_NO_AUTH turned on" "$work/cpu.yaml" \
  's/^\(  *\)TRANSFERD_TOKEN_FILE:\(.*\)$/\1TRANSFERD_TOKEN_FILE:\2\n\1TRANSFERD_INSECURE_NO_AUTH: "true"/' "TRANSFERD_INSECURE_NO_AUTH is"
reject_security "token file outside the Secret's mount" "$work/cpu.yaml" \
  's|TRANSFERD_TOKEN_FILE: /etc/transferd/secrets/tokens|TRANSFERD_TOKEN_FILE: /var/lib/transferd/tokens|' "is not readOnly"
reject_security "an ingress rule without from (every source)" "$work/cpu.yaml" \
  '/^kind: NetworkPolicy$/,/^---/{/^  - from:$/,/transferd-client/d;s/^    ports:$/  - ports:/}' "has no \`from\`"
reject_security "clients selected by another label" "$work/cpu.yaml" \
  's/transferd-client: "true"/app: anything/' 'pods must be selected by transferd-client'
reject_security "monitoring namespace admitted on the gRPC port too" "$work/monitoring.yaml" \
  '/kubernetes.io\/metadata.name: monitoring/,/^---/s/port: 8080/port: 50051/' "may reach only the metrics port" --monitoring
reject_security "tls: a probe left on the TLS gRPC port" "$work/tls.yaml" \
  '0,/port: 50052/s/port: 50052/port: 50051/' "not the plaintext health port" --tls
reject_security "tls: plaintext still allowed" "$work/tls.yaml" \
  's/TRANSFERD_ALLOW_PLAINTEXT: "false"/TRANSFERD_ALLOW_PLAINTEXT: "true"/' 'TRANSFERD_ALLOW_PLAINTEXT is "true"' --tls
reject_security "tls: plaintext left to the image's default (the line removed)" "$work/tls.yaml" \
  '/TRANSFERD_ALLOW_PLAINTEXT:/d' "TRANSFERD_ALLOW_PLAINTEXT is undefined" --tls
reject_security "an extra allow-all NetworkPolicy (podSelector {})" "$work/cpu.yaml" \
  '$a ---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: allow-all\nspec:\n  podSelector: {}\n  policyTypes:\n  - Ingress\n  ingress:\n  - {}' "NetworkPolicy/allow-all spec.ingress[0] has no \`from\`"
reject_security "--insecure-no-auth passed as a container argument" "$work/cpu.yaml" \
  's/^\(  *\)imagePullPolicy: IfNotPresent$/\1imagePullPolicy: IfNotPresent\n\1args: ["--insecure-no-auth"]/' 'TRANSFERD_INSECURE_NO_AUTH is "true"'
reject_security "tls: the certificate's Secret not the one mounted" "$work/tls.yaml" \
  '/^kind: Certificate$/,/^---/s/secretName: transferd-tls/secretName: other-tls/' "which no Certificate" --tls
# Every server's hardening (the primary's here; the workers' below).
reject_security "a writable root filesystem" "$work/cpu.yaml" \
  's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/' "readOnlyRootFilesystem is not true"
reject_security "capabilities not dropped (NET_RAW instead of ALL)" "$work/cpu.yaml" \
  's/^\( *\)- ALL$/\1- NET_RAW/' "capabilities.drop does not hold ALL"
reject_security "no memory limit" "$work/cpu.yaml" \
  '/^          limits:$/{N;d}' "no memory limit"
reject_security "the pod as root (runAsUser 0)" "$work/cpu.yaml" \
  's/runAsUser: 10001/runAsUser: 0/' "runAsUser is 0"
reject_security "serving: the replicas send no token to the primary (TRANSFERD_FOLLOW_TOKEN_FILE removed)" "$work/serving.yaml" \
  '/- name: TRANSFERD_FOLLOW_TOKEN_FILE$/{N;d}' "sends no token to the primary" --serving
reject_security "serving: the replicas send the callers' token file as their token" "$work/serving.yaml" \
  's|value: /etc/transferd/secrets/replica-token|value: /etc/transferd/secrets/tokens|' "is the callers' token file" --serving
reject_security "serving: the primary's NetworkPolicy lost the replicas' rule" "$work/serving.yaml" \
  '/^kind: NetworkPolicy$/,/^---/{/^  - from:$/{N;N;N;/instance: transferd-serving$/{N;N;N;N;d}}}' "cannot reach the primary" --serving
reject_security "serving: the replicas admitted to the primary's HTTP port" "$work/serving.yaml" \
  '/^kind: NetworkPolicy$/,/^---/{/instance: transferd-serving$/{n;n;n;s/- port: 50051/- port: 8080/}}' "may reach only the gRPC port" --serving
reject_security "serving: the replicas follow their own Service" "$work/serving.yaml" \
  's/value: transferd:50051$/value: transferd-serving:50051/' "does not select the primary" --serving
# serving-tls: the replicas' own TLS, and TLS to the primary.
reject_security "serving-tls: the replicas do not check the primary's certificate (TRANSFERD_FOLLOW_CA removed)" "$work/serving-tls.yaml" \
  '/- name: TRANSFERD_FOLLOW_CA$/{N;d}' "TRANSFERD_FOLLOW_CA is not set" --tls --serving
reject_security "serving-tls: the replicas' readiness back on the TLS gRPC port" "$work/serving-tls.yaml" \
  '/^kind: Deployment$/,/^---/{/readinessProbe:/,/service: aliases/s/port: 50052$/port: 50051/}' \
  "Deployment/transferd-serving: TLS: readinessProbe asks port 50051, not the plaintext health port" --tls --serving
reject_security "serving-tls: plaintext turned back on for the replicas alone" "$work/serving-tls.yaml" \
  's/^\(  *\)- name: TRANSFERD_FOLLOW_CA$/\1- name: TRANSFERD_ALLOW_PLAINTEXT\n\1  value: "true"\n&/' \
  'Deployment/transferd-serving: TLS: TRANSFERD_ALLOW_PLAINTEXT is "true"' --tls --serving
reject_security "serving-tls: the replicas' certificate lacks their Service's name" "$work/serving-tls.yaml" \
  '/^kind: Certificate$/,/^---/s/^  - transferd-serving$/  - transferd-replicas/' "does not carry the name transferd-serving" --tls --serving
reject_security "serving-tls: TRANSFERD_FOLLOW_CA is the replicas' own certificate, not a CA" "$work/serving-tls.yaml" \
  's|value: /etc/transferd/primary-ca/ca.crt$|value: /etc/transferd/tls/tls.crt|' "not its CA certificate ca.crt" --tls --serving
reject_security "serving-tls: the replicas check the primary for a name its certificate lacks" "$work/serving-tls.yaml" \
  's/^\(  *\)- name: TRANSFERD_FOLLOW_CA$/\1- name: TRANSFERD_FOLLOW_SERVER_NAME\n\1  value: primary.example.com\n&/' \
  "for the name primary.example.com" --tls --serving
reject_security "serving-tls: the replicas mount all of the primary's Secret (its private key too)" "$work/serving-tls.yaml" \
  '/^      - name: primary-ca$/,/secretName: transferd-tls$/{/^ *items:$/d;/^ *- key: ca.crt$/d;/^ *path: ca.crt$/d}' \
  "holds the primary's private key" --tls --serving
# distributed: the workers' token, their way to the coordinator, TCP
# between the ranks both ways, and their hardening.
reject_security "distributed: the workers send no token to the coordinator (TRANSFERD_WORKER_TOKEN_FILE removed)" "$work/distributed.yaml" \
  '/- name: TRANSFERD_WORKER_TOKEN_FILE$/{N;d}' "sends no token to the coordinator" --workers
reject_security "distributed: the workers send the callers' token file as their token" "$work/distributed.yaml" \
  's|value: /etc/transferd/secrets/worker-token|value: /etc/transferd/secrets/tokens|' "is the callers' token file" --workers
reject_security "distributed: the workers join their own Service" "$work/distributed.yaml" \
  's/value: transferd:50051$/value: transferd-worker:50051/' "does not select the primary" --workers
reject_security "distributed: the primary's NetworkPolicy lost the workers' rule" "$work/distributed.yaml" \
  '/^kind: NetworkPolicy$/,/^---/{/^  - from:$/{N;N;N;/instance: transferd-worker$/{N;N;N;d}}}' "cannot reach the coordinator" --workers
reject_security "distributed: the workers admitted to the primary on the gRPC port only (no TCPStore, no Gloo)" "$work/distributed.yaml" \
  '0,/^    - protocol: TCP$/s//    - port: 50051\n      protocol: TCP/' "cannot reach the coordinator's TCPStore" --workers
reject_security "distributed: the workers' NetworkPolicy does not admit the coordinator (Gloo dials both ways)" "$work/distributed.yaml" \
  '/^kind: NetworkPolicy$/,/^---/{/^    - podSelector:$/{N;N;/instance: transferd$/{N;d}}}' "admits the coordinator StatefulSet/transferd on all TCP ports" --workers
reject_security "distributed: the ranks admitted on every protocol (no ports)" "$work/distributed.yaml" \
  '/^kind: NetworkPolicy$/,/^---/{/^    ports:$/{N;/\n    - protocol: TCP$/d}}' "admitted on every protocol" --workers
reject_security "distributed: the ranks admitted on UDP" "$work/distributed.yaml" \
  's/^    - protocol: TCP$/    - protocol: UDP/' "admitted on UDP, not TCP only" --workers
reject_security "distributed: the workers allow privilege escalation" "$work/distributed.yaml" \
  '/^  name: transferd-worker$/,/^---/s/allowPrivilegeEscalation: false/allowPrivilegeEscalation: true/' \
  "StatefulSet/transferd-worker: container transferd: allowPrivilegeEscalation is not false" --workers
reject_security "distributed: service links on for the workers" "$work/distributed.yaml" \
  '/^  name: transferd-worker$/,/^---/s/enableServiceLinks: false/enableServiceLinks: true/' \
  "StatefulSet/transferd-worker: enableServiceLinks is not false" --workers
# The mistake serving-tls exists for: the tls and serving components
# together without it. The replicas would read the tls component's settings
# from the shared ConfigMap without the certificate's mount (and never
# start): security.mjs must refuse the rendering.
mkdir -p "$work/tls-serving"
rel=$(realpath --relative-to="$work/tls-serving" "$root/deploy/k8s")
printf 'resources:\n  - %s/overlays/cpu\ncomponents:\n  - %s/components/tls\n  - %s/components/serving\n' "$rel" "$rel" "$rel" \
  >"$work/tls-serving/kustomization.yaml"
if ! render "$work/tls-serving" >"$work/tls-serving.yaml" 2>"$work/out"; then
  fail "the tls and serving components without serving-tls: rendering failed"
  sed 's/^/    /' "$work/out"
elif node "$here/security.mjs" --tls --serving <"$work/tls-serving.yaml" >"$work/out" 2>&1; then
  fail "the tls and serving components without serving-tls: security.mjs accepted it"
elif ! grep -qF "Deployment/transferd-serving: TRANSFERD_TLS_CERT /etc/transferd/tls/tls.crt is in no volume mount" "$work/out"; then
  fail "the tls and serving components without serving-tls: rejected for another reason"
  sed 's/^/    /' "$work/out"
else
  pass "the tls and serving components without serving-tls: rejected ($(cut -c1-140 "$work/out" | head -1))"
fi
# The serving-tls component refuses to render out of order: before the
# serving component (its Deployment patch finds no Deployment), or before
# or without the tls component (its `test` of the ConfigMap fails).
# reject_render DESCRIPTION EXPECTED-TEXT COMPONENT...
reject_render() {
  local what=$1 expect=$2 dir="$work/order" c rel
  shift 2
  rm -rf "$dir" && mkdir -p "$dir"
  rel=$(realpath --relative-to="$dir" "$root/deploy/k8s")
  { printf 'resources:\n  - %s/overlays/cpu\ncomponents:\n' "$rel"
    for c in "$@"; do printf '  - %s/components/%s\n' "$rel" "$c"; done; } >"$dir/kustomization.yaml"
  if render "$dir" >/dev/null 2>"$work/out"; then
    fail "$what: rendered"
  elif ! grep -qF -- "$expect" "$work/out"; then
    fail "$what: not rendered, but the error does not mention '$expect'"
    sed 's/^/    /' "$work/out"
  else
    pass "$what: not rendered ($expect)"
  fi
}
reject_render "components tls, serving-tls, serving (serving-tls before serving)" \
  "no matches for Id Deployment.v1.apps/transferd-serving" tls serving-tls serving
reject_render "components serving, serving-tls (no tls)" \
  "testing value /data/TRANSFERD_ALLOW_PLAINTEXT failed" serving serving-tls
reject_render "components serving, serving-tls, tls (tls last)" \
  "testing value /data/TRANSFERD_ALLOW_PLAINTEXT failed" serving serving-tls tls

# The same for the other checks of rendered manifests (serving.mjs,
# monitoring.mjs wiring): a corrupted copy must fail COMMAND, read on stdin.
# reject_with DESCRIPTION SOURCE SED-SCRIPT EXPECTED-TEXT COMMAND...
reject_with() {
  local what=$1 from=$2 script=$3 expect=$4 bad="$work/bad.yaml"
  shift 4
  if [[ ! -s "$from" ]]; then fail "$what (no rendered $(basename "$from" .yaml) overlay)"; return; fi
  sed -e "$script" "$from" >"$bad"
  if cmp -s "$from" "$bad"; then fail "$what (the sed script changed nothing)"; return; fi
  if "$@" <"$bad" >"$work/out" 2>&1; then
    fail "$what: accepted"
  elif ! grep -qF -- "$expect" "$work/out"; then
    fail "$what: rejected, but the error does not mention '$expect'"
    sed 's/^/    /' "$work/out"
  else
    pass "$what: rejected ($(cut -c1-140 "$work/out" | head -1))"
  fi
}
serving_check=(node "$here/serving.mjs")
reject_with "serving: readiness on the whole server, not the alias" "$work/serving.yaml" \
  '/service: aliases\/pets$/d' "not the health of an alias" "${serving_check[@]}"
reject_with "serving: spec.replicas in the Deployment (the autoscaler's to set)" "$work/serving.yaml" \
  '/^kind: Deployment$/,/^---/s/^  revisionHistoryLimit: 5$/  replicas: 3\n  revisionHistoryLimit: 5/' "spec.replicas is set" "${serving_check[@]}"
reject_with "serving: the autoscaler down to one replica" "$work/serving.yaml" \
  's/^  minReplicas: 2$/  minReplicas: 1/' "minReplicas 1" "${serving_check[@]}"
reject_with "serving: a PodDisruptionBudget that lets no replica go" "$work/serving.yaml" \
  '/^kind: PodDisruptionBudget$/,/^---/s/^  maxUnavailable: 1$/  maxUnavailable: 0/' "lets no replica" "${serving_check[@]}"
reject_with "serving: the replicas' data dir on a PersistentVolumeClaim" "$work/serving.yaml" \
  '/^      - emptyDir:$/{N;s/- emptyDir:\n *sizeLimit: 20Gi/- persistentVolumeClaim:\n          claimName: cache/}' "is not an emptyDir" "${serving_check[@]}"
reject_with "serving-tls: readiness on a port the replicas do not declare" "$work/serving-tls.yaml" \
  '/^kind: Deployment$/,/^---/{/readinessProbe:/,/service: aliases/s/port: 50052$/port: 50053/}' "readinessProbe asks port 50053, which is no container port" "${serving_check[@]}"
reject_with "serving-tls: readiness on the whole server, not the alias" "$work/serving-tls.yaml" \
  '/service: aliases\/pets$/d' "not the health of an alias" "${serving_check[@]}"
reject_with "serving: the replicas' Service selects the primary too" "$work/serving.yaml" \
  '/^kind: Service$/,/^---/s/instance: transferd-serving$/instance: transferd/' "found 2 (Service/transferd, Service/transferd-serving)" \
  node "$here/monitoring.mjs" wiring
workers_check=(node "$here/workers.mjs")
reject_with "distributed: the coordinator without TRANSFERD_RENDEZVOUS_ADDRESS (127.0.0.1)" "$work/distributed.yaml" \
  '/^  name: transferd$/,/^---/{/- name: TRANSFERD_RENDEZVOUS_ADDRESS$/{N;N;N;d}}' "TRANSFERD_RENDEZVOUS_ADDRESS is not set" "${workers_check[@]}"
reject_with "distributed: every worker under one name" "$work/distributed.yaml" \
  '/- name: TRANSFERD_WORKER_NAME$/{n;N;N;s/.*/          value: worker/}' "every worker pod would join under that one name" "${workers_check[@]}"
reject_with "distributed: the workers' Service not headless" "$work/distributed.yaml" \
  '/^kind: Service$/,/^---/s/^  clusterIP: None$/  type: ClusterIP/' "is not headless" "${workers_check[@]}"
reject_with "distributed: the workers started one by one" "$work/distributed.yaml" \
  's/^  podManagementPolicy: Parallel$/  podManagementPolicy: OrderedReady/' "not Parallel" "${workers_check[@]}"
reject_with "distributed: the workers' data dir an emptyDir" "$work/distributed.yaml" \
  '/^  name: transferd-worker$/,/^---/s/^      - emptyDir: {}$/      - emptyDir: {}\n        name: data\n&/' "is not a volumeClaimTemplate" "${workers_check[@]}"
reject_with "distributed: the workers' Service selects the primary too" "$work/distributed.yaml" \
  '/^kind: Service$/,/^---/s/instance: transferd-worker$/instance: transferd/' "found 2 (Service/transferd, Service/transferd-worker)" \
  node "$here/monitoring.mjs" wiring
# The workers on the gpu overlay read its TRANSFERD_DEVICE cuda:0 from the
# shared ConfigMap: without a GPU each, workers.mjs must refuse them; with
# the patch of docs/deploy.md and the distributed overlay, accept them.
mkdir -p "$work/gpu-workers"
rel=$(realpath --relative-to="$work/gpu-workers" "$root/deploy/k8s")
printf 'resources:\n  - %s/overlays/gpu\ncomponents:\n  - %s/components/workers\n' "$rel" "$rel" >"$work/gpu-workers/kustomization.yaml"
if ! render "$work/gpu-workers" >"$work/gpu-workers.yaml" 2>"$work/out"; then
  fail "the workers on the gpu overlay without a GPU each: rendering failed"
  sed 's/^/    /' "$work/out"
elif "${workers_check[@]}" <"$work/gpu-workers.yaml" >"$work/out" 2>&1; then
  fail "the workers on the gpu overlay without a GPU each: workers.mjs accepted it"
elif ! grep -qF "TRANSFERD_DEVICE is cuda:0, but the workers have no nvidia.com/gpu limit" "$work/out"; then
  fail "the workers on the gpu overlay without a GPU each: rejected for another reason"
  sed 's/^/    /' "$work/out"
else
  pass "the workers on the gpu overlay without a GPU each: rejected ($(cut -c1-140 "$work/out" | head -1))"
fi
cat >>"$work/gpu-workers/kustomization.yaml" <<'EOF'
patches:
  - patch: |-
      apiVersion: apps/v1
      kind: StatefulSet
      metadata:
        name: transferd-worker
      spec:
        template:
          spec:
            nodeSelector:
              nvidia.com/gpu.present: "true"
            tolerations:
              - key: nvidia.com/gpu
                operator: Exists
                effect: NoSchedule
            containers:
              - name: transferd
                resources:
                  limits:
                    nvidia.com/gpu: 1
EOF
if render "$work/gpu-workers" >"$work/gpu-workers.yaml" 2>"$work/out" &&
  "${validator[@]}" <"$work/gpu-workers.yaml" >"$work/out" 2>&1 &&
  node "$here/security.mjs" --workers <"$work/gpu-workers.yaml" >"$work/out" 2>&1 &&
  "${workers_check[@]}" <"$work/gpu-workers.yaml" >"$work/out" 2>&1 &&
  [[ $(grep -cF "nvidia.com/gpu: 1" "$work/gpu-workers.yaml") -eq 2 ]]; then
  pass "the workers on the gpu overlay with a GPU each: valid, secure, wired, one nvidia.com/gpu per server"
else
  fail "the workers on the gpu overlay with a GPU each"
  sed 's/^/    /' "$work/out"
fi
# Serving replicas and workers on one primary: the two components add up
# (the primary's NetworkPolicy admits each on its own terms).
mkdir -p "$work/serving-workers"
rel=$(realpath --relative-to="$work/serving-workers" "$root/deploy/k8s")
printf 'resources:\n  - %s/overlays/cpu\ncomponents:\n  - %s/components/serving\n  - %s/components/workers\n' "$rel" "$rel" "$rel" \
  >"$work/serving-workers/kustomization.yaml"
if render "$work/serving-workers" >"$work/serving-workers.yaml" 2>"$work/out" &&
  "${validator[@]}" <"$work/serving-workers.yaml" >"$work/out" 2>&1 &&
  node "$here/security.mjs" --serving --workers <"$work/serving-workers.yaml" >"$work/out" 2>&1 &&
  node "$here/serving.mjs" <"$work/serving-workers.yaml" >"$work/out" 2>&1 &&
  "${workers_check[@]}" <"$work/serving-workers.yaml" >"$work/out" 2>&1 &&
  node "$here/monitoring.mjs" wiring <"$work/serving-workers.yaml" >"$work/out" 2>&1; then
  pass "the serving and workers components together: valid, secure, replicas and workers wired, metrics wired"
else
  fail "the serving and workers components together"
  sed 's/^/    /' "$work/out"
fi

# The same for promtool: a corrupted copy of a rule file must fail the given
# promtool command, with EXPECTED-TEXT in its output.
# reject_rules DESCRIPTION RULE-FILE SED-SCRIPT EXPECTED-TEXT PROMTOOL-ARGS...
reject_rules() {
  local what=$1 file=$2 script=$3 expect=$4 saved="$work/rules/saved.yaml"
  shift 4
  if [[ ! -s "$file" ]]; then fail "$what (no rule file)"; return; fi
  cp "$file" "$saved"
  sed -i -e "$script" "$file"
  if cmp -s "$file" "$saved"; then
    fail "$what (the sed script changed nothing)"
  elif "$promtool" "$@" >"$work/out" 2>&1; then
    fail "$what: promtool accepted it"
  elif ! grep -qF -- "$expect" "$work/out"; then
    fail "$what: rejected, but promtool's output does not mention '$expect'"
    sed 's/^/    /' "$work/out"
  else
    pass "$what: rejected ($(grep -m1 -F -- "$expect" "$work/out" | sed 's/^ *//' | cut -c1-140))"
  fi
  cp "$saved" "$file"
}
reject_rules "rules: broken PromQL (a trailing comma in histogram_quantile)" "$work/rules/all.yaml" \
  's/histogram_quantile(0.99,/histogram_quantile(0.99,,/' "could not parse expression" check rules "$work/rules/all.yaml"
reject_rules "rules: broken annotation template ({{ \$labels.kind })" "$work/rules/all.yaml" \
  '0,/{{ \$labels.kind }}/s/{{ \$labels.kind }}/{{ $labels.kind }/' "template:" check rules "$work/rules/all.yaml"
reject_rules "rules: a valid but wrong threshold (queue > 8 instead of > 0.8) fails the unit tests" "$work/rules/transferd.yaml" \
  's/> 0.8$/> 8/' "alertname: TransferdInferenceQueueNearlyFull" test rules "$work/rules/alerts.test.yaml"
sed -e 's/^RUN groupadd/RUNN groupadd/' deploy/docker/Dockerfile >"$work/Dockerfile.bad"
if node "$here/lint-dockerfiles.mjs" "$work/Dockerfile.bad" >"$work/out" 2>&1; then
  fail "Dockerfile with an unknown instruction (RUNN): the linter accepted it"
elif grep -qF "Unknown instruction: RUNN" "$work/out"; then
  pass "Dockerfile with an unknown instruction (RUNN): rejected"
else
  fail "Dockerfile with an unknown instruction (RUNN): rejected for another reason"
  sed 's/^/    /' "$work/out"
fi

# The package check must fail for a build stage with its own short list (as
# Dockerfile.cuda had: no HDF5, OpenCV, libcurl) and for a shared list that
# lost a package.
sed -e 's|/src/scripts/install-deps --build --without-torch|apt-get install -y g++ cmake ninja-build|' \
  deploy/docker/Dockerfile.cuda >"$work/Dockerfile.short"
if cmp -s deploy/docker/Dockerfile.cuda "$work/Dockerfile.short"; then
  fail "a build stage with a short package list (the sed script changed nothing)"
elif node "$here/packages.mjs" "$work/Dockerfile.short" >"$work/out" 2>&1; then
  fail "a build stage with a short package list: packages.mjs accepted it"
elif grep -qF "libhdf5-dev (CMake: find_package(HDF5))" "$work/out"; then
  pass "a build stage with a short package list: rejected ($(grep -m1 lacks "$work/out" | cut -c1-140))"
else
  fail "a build stage with a short package list: rejected for another reason"
  sed 's/^/    /' "$work/out"
fi
cp -r scripts/packages "$work/packages"
sed -i '/^libopencv-dev$/d' "$work/packages/build.txt"
if node "$here/packages.mjs" --packages "$work/packages" deploy/docker/Dockerfile >"$work/out" 2>&1; then
  fail "build.txt without libopencv-dev: packages.mjs accepted it"
elif grep -qF "libopencv-dev (CMake: find_package(OpenCV))" "$work/out"; then
  pass "build.txt without libopencv-dev: rejected ($(grep -m1 lacks "$work/out" | cut -c1-140))"
else
  fail "build.txt without libopencv-dev: rejected for another reason"
  sed 's/^/    /' "$work/out"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
