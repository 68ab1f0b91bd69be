#!/usr/bin/env node
// Syntax check of Dockerfiles without a Docker engine (none runs on the
// project's machines): the Dockerfile parser and validator of the VS Code
// Docker language service (npm dockerfile-utils). Catches unknown
// instructions and flags, malformed EXPOSE/HEALTHCHECK/STOPSIGNAL and the like;
// it does not build anything.
//
//   node lint-dockerfiles.mjs Dockerfile...
//
// Prints "ok FILE" per clean file; otherwise "FILE:LINE: message" per problem
// and exits 1.
import fs from "node:fs";
import { validate } from "dockerfile-utils";

const files = process.argv.slice(2);
if (!files.length) {
  console.error("usage: lint-dockerfiles.mjs Dockerfile...");
  process.exit(2);
}
let bad = 0;
for (const file of files) {
  const problems = validate(fs.readFileSync(file, "utf8"));
  if (!problems.length) {
    console.log(`ok ${file}`);
    continue;
  }
  bad++;
  for (const p of problems) {
    console.error(`${file}:${p.range.start.line + 1}: ${p.message}`);
  }
}
process.exitCode = bad ? 1 : 0;
