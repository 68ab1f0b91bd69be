#!/usr/bin/env python3
"""clang-tidy over server/rpc, server/core, server/http, server/auth and server/replica with a result cache.

Reads BUILD_DIR/compile_commands.json and skips a file whose
last run passed with the same inputs: the key hashes the clang-tidy version,
.clang-tidy, the compile command with the repository's path taken out, and
the contents of the file and of every header it includes (Ninja's dependency
log). A file whose headers are unknown (not built yet) is always checked.
Exits 1 when any file has findings (.clang-tidy makes every check an error).

CMake force-includes GCC's precompiled <torch/torch.h> into every file of
transferd_core, which clang cannot read. A file that reaches torch through its
own includes gets a clang precompiled header instead (built here once per set
of flags); a file that does not is checked as written, without torch: about 2 s
instead of about 20 s (clang-tidy's matchers walk all of torch's declarations).

  scripts/tidy.py [--build-dir build] [--jobs 2] [FILE...]
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRS = ("server/rpc/", "server/core/", "server/http/", "server/auth/", "server/replica/")
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


def compile_args(cmd):
    """The compiler's flags without its name, source and output."""
    args, out, skip = shlex.split(cmd)[1:], [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("-o", "-c"):
            skip = True
        elif not a.endswith((".cc", ".cpp", ".cxx")):
            out.append(a)
    return out


def reaches_torch(cmd, directory):
    """Whether the file includes LibTorch itself (preprocessor only, ~0.5 s).
    When that cannot be told, it gets torch, as in the build."""
    args = shlex.split(cmd)
    source = args[args.index("-c") + 1]
    r = subprocess.run(["clang++", *compile_args(cmd), "-M", source], cwd=directory,
                       capture_output=True, text=True)
    return r.returncode != 0 or re.search(r"/(torch|ATen|c10)/", r.stdout) is not None


pch_commands = {}


def pch_path(tidy_dir, cmd):
    flags = compile_args(cmd)
    # Named without the checkout's path: the name is part of the cache key.
    path = os.path.join(tidy_dir, "torch-%s.pch" % hashlib.sha256(
        " ".join(flags).replace(ROOT, "<root>").encode()).hexdigest()[:16])
    pch_commands[path] = flags
    return path


def build_pch(path, flags):
    header = os.path.join(os.path.dirname(path), "torch_pch.h")
    with open(header, "w") as f:
        f.write("#pragma once\n#include <torch/torch.h>\n")
    subprocess.run(["clang++", *flags, "-x", "c++-header", header, "-o", path + ".tmp"],
                   check=True)
    os.replace(path + ".tmp", path)


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
    selected = []
    for e in entries:
        rel = os.path.relpath(e["file"], ROOT)
        if not rel.startswith(DIRS) or (args.files and rel not in args.files):
            continue
        cmd = e["command"]
        # GCC-only flags clang does not know (rmsprop.cc's vectoriser).
        for flag in ("-Winvalid-pch", "-ftree-loop-vectorize",
                     "-fvect-cost-model=dynamic"):
            cmd = cmd.replace(flag, "")
        forced = re.search(r"-include \S*cmake_pch\.hxx", cmd) is not None
        cmd = re.sub(r"-include \S*cmake_pch\.hxx", "", cmd)
        selected.append((rel, dict(e, command=cmd), forced))

    version = subprocess.run(["clang-tidy", "--version"], capture_output=True,
                             text=True).stdout
    config = open(os.path.join(ROOT, ".clang-tidy"), "rb").read()
    deps = ninja_deps(build_dir)
    os.makedirs(CACHE, exist_ok=True)

    def key_of(rel, e, forced):
        obj = e.get("output") or re.search(r"-o (\S+)", e["command"]).group(1)
        headers = deps.get(obj)
        if headers is None:
            return None
        h = hashlib.sha256()
        h.update(version.encode())
        h.update(config)
        h.update(e["command"].replace(ROOT, "<root>").encode() + str(forced).encode())
        h.update(rel.encode() + file_hash(os.path.join(ROOT, rel)).encode())
        for d in sorted(headers):
            full = d if os.path.isabs(d) else os.path.join(build_dir, d)
            name = os.path.relpath(full, ROOT) if full.startswith(ROOT) else full
            h.update(name.encode() + file_hash(full).encode())
        return h.hexdigest()

    todo, cached = [], 0
    for rel, e, forced in selected:
        key = key_of(rel, e, forced)
        if key and os.path.exists(os.path.join(CACHE, key)):
            cached += 1
        else:
            todo.append([rel, key, e, forced])

    # Only the files to check: which of them reach torch, and their commands.
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        torch = list(pool.map(lambda t: t[3] and reaches_torch(t[2]["command"],
                                                                 t[2]["directory"]), todo))
    for item, uses_torch in zip(todo, torch):
        e = item[2]
        item[2] = pch_path(tidy_dir, e["command"]) if uses_torch else None
        if item[2]:
            e["command"] += " -include-pch " + item[2]
    with open(os.path.join(tidy_dir, "compile_commands.json"), "w") as f:
        json.dump([e for _, e, _ in selected], f)
    todo = [(rel, key, pch) for rel, key, pch, _ in todo]

    def run(item):
        rel, key, pch = item
        if pch:
            pchs[pch].result()
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
        # Headers first (a check waits for its own), then the files without torch.
        pchs = {p: pool.submit(build_pch, p, pch_commands[p])
                for p in sorted({pch for _, _, pch in todo if pch})}
        todo.sort(key=lambda item: item[2] is not None)
        for rel, ok, findings in pool.map(run, todo):
            if not ok:
                failed.append(rel)
                print(findings)
    print(f"clang-tidy: {len(selected)} files, {cached} unchanged since a clean run, "
          f"{len(todo)} checked, {len(failed)} with findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
