#!/usr/bin/env node
// Every package CMake needs is installed by every image's build stage, and by
// scripts/install-deps: the check that would have caught Dockerfile.cuda
// configuring without HDF5, OpenCV and libcurl.
//
//   node packages.mjs [--packages DIR] DOCKERFILE...
//
// 1. Reads what CMake requires from the CMakeLists.txt files the images build
//    (all but tests/) and cmake/*.cmake: find_package(NAME ...),
//    pkg_check_modules(VAR ... MODULE...) and find_library(VAR NAMES NAME
//    ...). Each name maps to Debian packages in CMAKE_PACKAGES (or
//    LIBRARY_PACKAGES) below; a name the map does not know is an error (add
//    it there, and its package to scripts/packages/build.txt).
// 2. For each Dockerfile, collects what its build stage (`FROM ... AS build`)
//    installs: literal `apt-get install` arguments, `xargs -a FILE apt-get
//    install`, and `scripts/install-deps [--build] [--without-torch]`
//    expanded from the package lists (scripts/packages, or --packages DIR).
//    A stage that downloads the official LibTorch (LIBTORCH_URL) has Torch.
// 3. Fails naming the Dockerfile, the package and the CMake requirement for
//    anything missing; checks scripts/install-deps (no option) the same way.
//
// Prints "ok ..." per checked installer; exits 1 on a missing package, 2 on
// usage errors.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

// CMake package or pkg-config module -> the Debian 12 packages that provide
// it (a list of alternatives is written "a|b": any one of them will do).
const CMAKE_PACKAGES = {
  Torch: ["libtorch-dev"],
  Protobuf: ["libprotobuf-dev", "protobuf-compiler"],
  gRPC: ["libgrpc++-dev", "protobuf-compiler-grpc"],
  absl: ["libabsl-dev"],
  spdlog: ["libspdlog-dev"],
  CLI11: ["libcli11-dev"], // QUIET in CMake, but the sources include <CLI/CLI.hpp>
  nlohmann_json: ["nlohmann-json3-dev"],
  SQLite3: ["libsqlite3-dev"],
  CURL: ["libcurl4-openssl-dev|libcurl4-gnutls-dev"],
  HDF5: ["libhdf5-dev"],
  OpenCV: ["libopencv-dev"],
  Threads: [],
  "prometheus-cpp": ["prometheus-cpp-dev"],
  PkgConfig: ["pkg-config"],
  "cpp-httplib": ["libcpp-httplib-dev"],
  "yaml-cpp": ["libyaml-cpp-dev"],
  OpenSSL: ["libssl-dev"],
};
// find_library(VAR NAMES name...) -> the packages that hold the library.
const LIBRARY_PACKAGES = {
  tcmalloc_minimal: ["libtcmalloc-minimal4"],
};
// Looked for but not needed (the build works without them).
const OPTIONAL = new Set(["Git"]);
// What every build runs, whatever CMakeLists says: scripts/build's generator
// and compiler.
const TOOLCHAIN = { "cmake -G Ninja": ["cmake", "ninja-build", "g++"] };

class Problem extends Error {}

function cmakeFiles() {
  const out = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (["tests", "build", "node_modules", ".git"].includes(e.name) || e.name.startsWith("build-")) continue;
        walk(p);
      } else if (e.name === "CMakeLists.txt" || (dir.endsWith("/cmake") && e.name.endsWith(".cmake"))) {
        out.push(p);
      }
    }
  };
  walk(root);
  return out;
}

// requirement label -> packages (alternatives as "a|b")
function cmakeRequirements() {
  const req = new Map(Object.entries(TOOLCHAIN));
  for (const file of cmakeFiles()) {
    const text = fs.readFileSync(file, "utf8").replace(/#.*$/gm, "");
    const rel = path.relative(root, file);
    for (const m of text.matchAll(/\bfind_package\s*\(\s*([A-Za-z0-9_.+-]+)/g)) {
      const name = m[1];
      if (OPTIONAL.has(name)) continue;
      if (!(name in CMAKE_PACKAGES)) throw new Problem(`${rel}: find_package(${name}) is not in CMAKE_PACKAGES (tests/deploy/packages.mjs): map it to its Debian package`);
      req.set(`find_package(${name})`, CMAKE_PACKAGES[name]);
    }
    for (const m of text.matchAll(/\bfind_library\s*\(\s*\w+\s+NAMES\s+([A-Za-z0-9_.+-]+)/g)) {
      const name = m[1];
      if (!(name in LIBRARY_PACKAGES)) throw new Problem(`${rel}: find_library(... ${name}) is not in LIBRARY_PACKAGES (tests/deploy/packages.mjs): map it to its Debian package`);
      req.set(`find_library(${name})`, LIBRARY_PACKAGES[name]);
    }
    for (const m of text.matchAll(/\bpkg_check_modules\s*\(([^)]*)\)/g)) {
      const args = m[1].trim().split(/\s+/).slice(1);
      const keywords = new Set(["REQUIRED", "QUIET", "IMPORTED_TARGET", "GLOBAL", "NO_CMAKE_PATH", "NO_CMAKE_ENVIRONMENT_PATH"]);
      for (const mod of args.filter((a) => !keywords.has(a))) {
        const name = mod.replace(/[<>=].*$/, "");
        if (!(name in CMAKE_PACKAGES)) throw new Problem(`${rel}: pkg_check_modules(... ${name}) is not in CMAKE_PACKAGES (tests/deploy/packages.mjs)`);
        req.set(`pkg_check_modules(${name})`, CMAKE_PACKAGES[name]);
      }
    }
  }
  return req;
}

// The same lists and modes as scripts/install-deps.
function installDeps(listsDir, args) {
  const read = (f) =>
    fs.readFileSync(path.join(listsDir, f), "utf8").split("\n")
      .map((l) => l.replace(/#.*/, "").trim()).filter(Boolean);
  const mode = args.includes("--runtime") ? "runtime" : args.includes("--build") ? "build" : "all";
  const files = { all: ["build.txt", "dev.txt"], build: ["build.txt"], runtime: ["runtime.txt"] }[mode];
  if (mode !== "runtime" && !args.includes("--without-torch")) files.push("debian-torch.txt");
  return files.flatMap(read);
}

// Instructions of the stage named `build`, continuation lines joined.
function buildStage(file) {
  const lines = fs.readFileSync(file, "utf8").replace(/\\\r?\n/g, " ").split("\n");
  const stage = [];
  let inBuild = false;
  for (const line of lines) {
    const t = line.trim();
    if (/^FROM\s/i.test(t)) inBuild = /\sAS\s+build\s*$/i.test(t);
    else if (inBuild && t && !t.startsWith("#")) stage.push(t);
  }
  if (stage.length === 0) throw new Problem(`${file}: no stage \`FROM ... AS build\``);
  return stage;
}

function stagePackages(file, listsDir) {
  const pkgs = new Set();
  let officialTorch = false;
  for (const ins of buildStage(file)) {
    if (!/^RUN\s/i.test(ins)) continue;
    // The official LibTorch is fetched in a RUN (an ARG alone brings nothing).
    if (/LIBTORCH_URL/.test(ins) && /\b(curl|wget)\b/.test(ins)) officialTorch = true;
    for (const cmd of ins.replace(/^RUN\s+(--\S+\s+)*/i, "").split(/&&|;|\|\|/)) {
      const words = cmd.trim().split(/\s+/);
      const at = words.findIndex((w) => w.endsWith("scripts/install-deps"));
      if (at >= 0 && words.includes("--list")) continue; // prints, installs nothing
      if (at >= 0) {
        for (const p of installDeps(listsDir, words.slice(at + 1))) pkgs.add(p);
        continue;
      }
      const xargs = cmd.match(/xargs\s+-a\s+(\S+)\s+apt-get\s+install/);
      if (xargs) {
        const f = path.join(root, xargs[1].replace(/^\/src\//, ""));
        if (!fs.existsSync(f)) throw new Problem(`${file}: xargs -a ${xargs[1]}: not a file of the repository`);
        for (const p of fs.readFileSync(f, "utf8").split(/\s+/).filter((w) => w && !w.startsWith("#"))) pkgs.add(p);
        continue;
      }
      const apt = words.indexOf("install");
      if (apt > 0 && /apt(-get)?$/.test(words[apt - 1])) {
        for (const w of words.slice(apt + 1)) if (!w.startsWith("-")) pkgs.add(w);
      }
    }
  }
  return { pkgs, officialTorch };
}

function missing(req, pkgs, officialTorch) {
  const out = [];
  for (const [what, needs] of req) {
    if (what === "find_package(Torch)" && officialTorch) continue;
    for (const alt of needs) {
      if (!alt.split("|").some((p) => pkgs.has(p))) out.push(`${alt} (CMake: ${what})`);
    }
  }
  return out;
}

function main(argv) {
  let listsDir = path.join(root, "scripts/packages");
  const files = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--packages") listsDir = path.resolve(argv[++i] ?? "");
    else files.push(argv[i]);
  }
  if (files.length === 0) {
    console.error("usage: packages.mjs [--packages DIR] DOCKERFILE...");
    process.exit(2);
  }
  const req = cmakeRequirements();
  let bad = 0;
  // installDeps() re-reads the lists as scripts/install-deps does; the script
  // itself must agree, in every mode (else this check would test a copy).
  if (listsDir === path.join(root, "scripts/packages")) {
    for (const mode of [[], ["--build"], ["--build", "--without-torch"], ["--runtime"]]) {
      const real = execFileSync(path.join(root, "scripts/install-deps"), ["--list", ...mode], { encoding: "utf8" })
        .split("\n").filter(Boolean).sort();
      const mine = installDeps(listsDir, mode).sort();
      if (JSON.stringify(real) !== JSON.stringify(mine)) {
        console.error(`scripts/install-deps --list ${mode.join(" ")} differs from packages.mjs's reading of the lists`);
        bad++;
      }
    }
  }
  const report = (who, pkgs, officialTorch) => {
    const lacks = missing(req, pkgs, officialTorch);
    if (lacks.length) {
      console.error(`${who} lacks ${lacks.join(", ")}`);
      bad++;
    } else {
      console.log(`ok ${who}: all ${req.size} CMake requirements installed${officialTorch ? " (Torch: the official LibTorch)" : ""}`);
    }
  };
  report("scripts/install-deps", new Set(installDeps(listsDir, [])), false);
  for (const f of files) {
    const { pkgs, officialTorch } = stagePackages(f, listsDir);
    report(`${path.relative(root, path.resolve(f)) || f} build stage`, pkgs, officialTorch);
  }
  process.exit(bad ? 1 : 0);
}

try {
  main(process.argv.slice(2));
} catch (e) {
  if (!(e instanceof Problem)) throw e;
  console.error(`packages.mjs: ${e.message}`);
  process.exit(1);
}
