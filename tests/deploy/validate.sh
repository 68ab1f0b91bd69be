#!/usr/bin/env bash
# Offline checks of the Kubernetes manifests in deploy/k8s: no cluster needed.
#
#   tests/deploy/validate.sh
#
# Renders each overlay with `kubectl kustomize` (kustomize v5, as in kubectl
# 1.27+; a standalone `kustomize` binary is used when kubectl is missing) and
# validates every object strictly with validate.mjs: the Kubernetes OpenAPI
# schemas shipped by the npm package kubernetes-models, plus a check that
# rejects unknown (misspelled) fields. Checks the Dockerfiles' syntax
# (lint-dockerfiles.mjs; they cannot be built here) and that they agree with
# the manifests. Then corrupts the rendered manifests and a Dockerfile on
# purpose and asserts that the checks reject them, so a validator that passes
# everything cannot go unnoticed.
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

for overlay in cpu gpu; do
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
  esac
done

# The images cannot be built here (no Docker engine): check their syntax, and
# that they agree with the manifests (user, port, data dir, listen address).
echo "== Dockerfiles"
for df in deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda; do
  check "$df: syntax (dockerfile-utils)" node "$here/lint-dockerfiles.mjs" "$df"
  check "$df: USER 10001, EXPOSE 50051, VOLUME and TRANSFERD_DATA_DIR /var/lib/transferd, listens on 0.0.0.0:50051, JSON logs" \
    bash -c 'grep -qx "USER 10001:10001" "$1" && grep -qx "EXPOSE 50051" "$1" &&
      grep -qxF "VOLUME [\"/var/lib/transferd\"]" "$1" && grep -qF "TRANSFERD_DATA_DIR=/var/lib/transferd" "$1" &&
      grep -qF "TRANSFERD_LISTEN=0.0.0.0:50051" "$1" && grep -qF "TRANSFERD_LOG_FORMAT=json" "$1" &&
      grep -qxF "ENTRYPOINT [\"/usr/local/bin/transferd\"]" "$1" && grep -q -- "--uid 10001 --gid 10001" "$1"' _ "$df"
done
check ".dockerignore keeps build trees, data dirs, .git and node_modules out of the context" \
  bash -c 'for p in .git build/ "build-*/" transferd-data/ tests/deploy/node_modules/; do grep -qxF -- "$p" .dockerignore || { echo "missing: $p"; exit 1; }; done'
if [[ -s "$work/cpu.yaml" ]]; then
  check "manifests run the pod as the image's user (runAsUser/runAsGroup/fsGroup 10001)" \
    bash -c 'for f in runAsUser runAsGroup fsGroup; do grep -qxF "        $f: 10001" "$1" || { echo "no $f: 10001"; exit 1; }; done' _ "$work/cpu.yaml"
fi

# Negative checks: each corrupts the rendered cpu overlay with sed and expects
# the validator to fail, naming what is wrong (so it failed for that reason).
echo "== negative checks (the validator must reject these)"
cpu="$work/cpu.yaml"
# reject DESCRIPTION SED-SCRIPT EXPECTED-TEXT-IN-ERROR
reject() {
  local what=$1 script=$2 expect=$3 bad="$work/bad.yaml"
  if [[ ! -s "$cpu" ]]; then fail "$what (no rendered cpu overlay)"; return; fi
  sed -e "$script" "$cpu" >"$bad"
  if cmp -s "$cpu" "$bad"; then fail "$what (the sed script changed nothing)"; return; fi
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
sed -e 's/^RUN groupadd/RUNN groupadd/' deploy/docker/Dockerfile >"$work/Dockerfile.bad"
if node "$here/lint-dockerfiles.mjs" "$work/Dockerfile.bad" >"$work/out" 2>&1; then
  fail "Dockerfile with an unknown instruction (RUNN): the linter accepted it"
elif grep -qF "Unknown instruction: RUNN" "$work/out"; then
  pass "Dockerfile with an unknown instruction (RUNN): rejected"
else
  fail "Dockerfile with an unknown instruction (RUNN): rejected for another reason"
  sed 's/^/    /' "$work/out"
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
