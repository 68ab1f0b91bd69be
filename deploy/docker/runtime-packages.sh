#!/usr/bin/env bash
# Prints, one per line, the dpkg packages that own the shared libraries the
# given binaries load (ldd: direct and indirect). Run it in a build stage,
# install the list in the runtime stage of the same distribution release:
# the runtime stage then has exactly the libraries the binaries were linked
# against, without naming packages by hand (Dockerfile.cuda does this).
#
#   deploy/docker/runtime-packages.sh BINARY... > runtime-packages.txt
#
# Libraries under a prefix listed in RUNTIME_PACKAGES_SKIP (colon-separated,
# e.g. /opt/libtorch) are skipped: they are copied into the image as files.
# Sonames listed in RUNTIME_PACKAGES_MISSING_OK (space-separated, e.g.
# libcuda.so.1, which the NVIDIA driver brings at run time) may be missing.
# Fails when any other library is not found or belongs to no package.
set -euo pipefail

[[ $# -gt 0 ]] || { echo "usage: $0 BINARY..." >&2; exit 2; }
IFS=: read -r -a skip <<<"${RUNTIME_PACKAGES_SKIP:-}"

libs=$(ldd "$@" | awk '
  /not found/ { print "MISSING " $1; next }
  $2 == "=>" && $3 ~ /^\// { print $3 }
  /^[ \t]+\// { print $1 }')
missing=$(sed -n 's/^MISSING //p' <<<"$libs" | sort -u)
for ok in ${RUNTIME_PACKAGES_MISSING_OK:-}; do
  missing=$(grep -vxF -- "$ok" <<<"$missing" || true)
done
if [[ -n "$missing" ]]; then
  echo "runtime-packages: libraries not found: $(paste -sd' ' <<<"$missing")" >&2
  exit 1
fi
libs=$(grep -v '^MISSING ' <<<"$libs" || true)

# dpkg records paths as the package shipped them: /lib/... or /usr/lib/...
# (merged /usr), sometimes behind a symlink (/usr/local/cuda -> cuda-12.x);
# ask about every spelling at once, then take the first that has an owner.
declare -A candidates
for lib in $(sort -u <<<"$libs"); do
  for prefix in "${skip[@]}"; do
    [[ -n "$prefix" && "$lib" == "$prefix"/* ]] && continue 2
  done
  candidates[$lib]="$lib $(readlink -f "$lib") /usr$lib ${lib#/usr}"
done
declare -A owner
while IFS= read -r line; do
  owner[${line#*: }]=${line%%: *}
done < <(dpkg-query -S ${candidates[@]} 2>/dev/null | grep -v -e ', ' -e '^diversion ' || true)

status=0
pkgs=()
for lib in "${!candidates[@]}"; do
  pkg=""
  for path in ${candidates[$lib]}; do
    pkg=${owner[$path]:-}
    [[ -n "$pkg" ]] && break
  done
  if [[ -z "$pkg" ]]; then
    echo "runtime-packages: no package owns $lib" >&2
    status=1
    continue
  fi
  pkgs+=("${pkg%%:*}")
done
[[ $status -eq 0 ]] || exit 1
[[ ${#pkgs[@]} -gt 0 ]] || { echo "runtime-packages: no libraries found" >&2; exit 1; }
printf '%s\n' "${pkgs[@]}" | sort -u
