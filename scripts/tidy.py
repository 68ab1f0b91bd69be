#!/usr/bin/env python3
"""clang-tidy over server/rpc, server/core, server/http and server/auth with a result cache.

Reads BUILD_DIR/compile_commands.json (the precompiled <torch/torch.h> is
GCC's: clang gets `-include torch/torch.h` instead), and skips a file whose
last run passed with the same inputs: the key hashes the clang-tidy version,
.clang-tidy, the compile command with the repository's path taken out, and
the contents of the file and of every header it includes (Ninja's dependency
log). A file whose headers are unknown (not built yet) is always checked.
Exits 1 when any file has findings (.clang-tidy makes every check an error).

  scripts/tidy.py [--build-dir build] [--jobs 2] [FILE...]
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRS = ("server/rpc/", "server/core/", "server/http/", "server/auth/")
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                     "transferd-tidy")


def ninja_deps(build_dir):
    """object path (relative to build_dir) -> list of dependency paths."""
    out = subprocess.run(["ninja", "-C", build_dir, "-t", "deps"], capture_output=True,
                         text=True, check=False).stdout
    deps, current = {}, None
    for line in out.splitlines():
        if line and not line.startswith(" "):
            current = line.split(":", 1)[0]
            deps[current] = [] if "(VALID)" in line else None
        elif line.strip() and current is not None and deps[current] is not None:
            deps[current].append(line.strip())
    return deps


_file_hashes = {}


def file_hash(path):
    if path not in _file_hashes:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                h.update(f.read())
        except OSError:
            h.update(b"<missing>")
        _file_hashes[path] = h.hexdigest()
    return _file_hashes[path]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", default=os.environ.get("BUILD_DIR", "build"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("files", nargs="*")
    args = ap.parse_args()
    build_dir = os.path.abspath(os.path.join(ROOT, args.build_dir))
    with open(os.path.join(build_dir, "compile_commands.json")) as f:
        entries = json.load(f)

    tidy_dir = os.path.join(build_dir, "tidy")
    os.makedirs(tidy_dir, exist_ok=True)
    selected, rewritten = [], []
    for e in entries:
        rel = os.path.relpath(e["file"], ROOT)
        if not rel.startswith(DIRS) or (args.files and rel not in args.files):
            continue
        cmd = re.sub(r"-include \S*cmake_pch\.hxx", "-include torch/torch.h", e["command"])
        # GCC-only flags clang does not know (rmsprop.cc's vectoriser).
        for flag in ("-Winvalid-pch", "-ftree-loop-vectorize",
                     "-fvect-cost-model=dynamic"):
            cmd = cmd.replace(flag, "")
        e = dict(e, command=cmd)
        rewritten.append(e)
        selected.append((rel, e))
    with open(os.path.join(tidy_dir, "compile_commands.json"), "w") as f:
        json.dump(rewritten, f)

    version = subprocess.run(["clang-tidy", "--version"], capture_output=True,
                             text=True).stdout
    config = open(os.path.join(ROOT, ".clang-tidy"), "rb").read()
    deps = ninja_deps(build_dir)
    os.makedirs(CACHE, exist_ok=True)

    def key_of(rel, e):
        obj = e.get("output") or re.search(r"-o (\S+)", e["command"]).group(1)
        headers = deps.get(obj)
        if headers is None:
            return None
        h = hashlib.sha256()
        h.update(version.encode())
        h.update(config)
        h.update(e["command"].replace(ROOT, "<root>").encode())
        h.update(rel.encode() + file_hash(os.path.join(ROOT, rel)).encode())
        for d in sorted(headers):
            full = d if os.path.isabs(d) else os.path.join(build_dir, d)
            name = os.path.relpath(full, ROOT) if full.startswith(ROOT) else full
            h.update(name.encode() + file_hash(full).encode())
        return h.hexdigest()

    todo, cached = [], 0
    for rel, e in selected:
        key = key_of(rel, e)
        if key and os.path.exists(os.path.join(CACHE, key)):
            cached += 1
        else:
            todo.append((rel, key))

    def run(item):
        rel, key = item
        r = subprocess.run(["clang-tidy", "-p", tidy_dir, "--quiet", rel], cwd=ROOT,
                           capture_output=True, text=True)
        findings = "\n".join(l for l in (r.stdout + r.stderr).splitlines()
                             if not re.match(r"^\d+ warnings? (and \d+ errors? )?generated", l))
        ok = r.returncode == 0
        if ok and key:
            open(os.path.join(CACHE, key), "w").close()
        return rel, ok, findings

    failed = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for rel, ok, findings in pool.map(run, todo):
            if not ok:
                failed.append(rel)
                print(findings)
    print(f"clang-tidy: {len(selected)} files, {cached} unchanged since a clean run, "
          f"{len(todo)} checked, {len(failed)} with findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
