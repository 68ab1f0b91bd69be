#!/usr/bin/env node
// Offline, strict validation of Kubernetes manifests (the output of
// `kubectl kustomize`) against the OpenAPI schemas that the npm package
// kubernetes-models ships, compiled.
//
//   node validate.mjs [FILE...]     read multi-document YAML from the files,
//                                   or from stdin when none (or "-") is given
//   node validate.mjs --self-check  check that the strictness technique below
//                                   sees every field kubernetes-models declares
//
// For each object it picks the kubernetes-models class by apiVersion + kind
// (KINDS below; any other kind is an error), calls the model's .validate()
// (types, enums, required fields, formats) and then checks for unknown fields.
// It prints "ok Kind/name" per object, and on the first invalid object prints
// why on stderr and exits 1. Usage and parse errors exit 2.
//
// Why the extra unknown-field check: kubernetes-models' schemas do not set
// additionalProperties: false, so its .validate() accepts a misspelled field
// (`readinessProbee`, `imagePullPolicyy`) without a word, while the API server
// (kubectl apply with --validate=strict, the default) rejects it or drops it.
// The package ships its schemas only as compiled Ajv validators, which read
// every property that their schema declares (`data.readinessProbe !== undefined`,
// also when it is absent) and every key of a map they check (labels, data,
// resources.limits). So the validator runs once more on a Proxy of the object
// that records which keys were read; a key of the object that the compiled
// schema never read is a field the schema does not declare: an unknown field.
// `--self-check` verifies that assumption for the installed package version:
// for every model class it compares the fields declared in the class's
// TypeScript interface with the fields its validator reads.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim";
import { Secret } from "kubernetes-models/v1/Secret";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { StatefulSet } from "kubernetes-models/apps/v1/StatefulSet";
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";

// The kinds transferd's manifests may contain. Add a class here (import it
// above) before using a new kind in deploy/k8s; anything else is rejected.
const KINDS = new Map(
  [
    ConfigMap,
    Namespace,
    PersistentVolumeClaim,
    Secret,
    Service,
    ServiceAccount,
    Deployment,
    StatefulSet,
    NetworkPolicy,
    PodDisruptionBudget,
  ].map((cls) => [`${cls.apiVersion}/${cls.kind}`, cls]),
);

class Invalid extends Error {}

// ---- unknown-field check ---------------------------------------------------

function isObject(v) {
  return v !== null && typeof v === "object";
}

// Runs `cls`'s compiled schema on a read-recording view of `data` and returns
// the paths of the keys it never read.
function unknownFields(cls, data) {
  const reads = new WeakMap(); // target object/array -> Set of keys read
  const views = new WeakMap(); // target -> its Proxy (stable identity)
  const view = (target) => {
    let p = views.get(target);
    if (!p) {
      reads.set(target, new Set());
      p = new Proxy(target, {
        get(t, key, receiver) {
          reads.get(t).add(key);
          const v = Reflect.get(t, key, receiver);
          return isObject(v) ? view(v) : v;
        },
      });
      views.set(target, p);
    }
    return p;
  };
  // The same function that Model#validate runs, with `this` = the view. The
  // object already passed .validate(), so the compiled code runs to the end.
  try {
    cls.prototype.validate.call(view(data));
  } catch (e) {
    throw new Invalid(e.message);
  }

  const unknown = [];
  const walk = (node, at) => {
    if (Array.isArray(node)) {
      node.forEach((v, i) => isObject(v) && walk(v, `${at}[${i}]`));
      return;
    }
    const seen = reads.get(node);
    for (const key of Object.keys(node)) {
      const here = at ? `${at}.${key}` : key;
      if (!seen || !seen.has(key)) {
        unknown.push(here);
      } else if (isObject(node[key])) {
        walk(node[key], here);
      }
    }
  };
  walk(data, "");
  return unknown;
}

// ---- one object ------------------------------------------------------------

function describe(obj) {
  const kind = isObject(obj) && typeof obj.kind === "string" ? obj.kind : "?";
  const name =
    isObject(obj) && isObject(obj.metadata) && typeof obj.metadata.name === "string"
      ? obj.metadata.name
      : "?";
  return `${kind}/${name}`;
}

function validateObject(obj) {
  if (!isObject(obj) || Array.isArray(obj)) {
    throw new Invalid("not a mapping");
  }
  if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
    throw new Invalid("apiVersion and kind must be strings");
  }
  const cls = KINDS.get(`${obj.apiVersion}/${obj.kind}`);
  if (!cls) {
    throw new Invalid(
      `unknown kind ${obj.apiVersion}/${obj.kind} (known: ${[...KINDS.keys()].join(", ")})`,
    );
  }
  if (!isObject(obj.metadata) || typeof obj.metadata.name !== "string" || !obj.metadata.name) {
    throw new Invalid("metadata.name is required");
  }
  try {
    new cls(obj).validate();
  } catch (e) {
    throw new Invalid(e.message);
  }
  const unknown = unknownFields(cls, obj);
  if (unknown.length) {
    throw new Invalid(
      `unknown field${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")} ` +
        `(not in the ${obj.apiVersion} ${obj.kind} schema; misspelled?)`,
    );
  }
}

// ---- input -----------------------------------------------------------------

function readInput(file) {
  return file === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(file, "utf8");
}

function validateText(text, source) {
  let count = 0;
  const docs = parseAllDocuments(text, { prettyErrors: true });
  for (const [i, doc] of docs.entries()) {
    const where = `${source}, document ${i + 1}`;
    if (doc.errors.length) {
      throw new Invalid(`${where}: YAML error: ${doc.errors[0].message.split("\n")[0]}`);
    }
    const obj = doc.toJS();
    if (obj === null || obj === undefined) continue; // empty document
    try {
      validateObject(obj);
    } catch (e) {
      if (e instanceof Invalid) {
        throw new Invalid(`${describe(obj)} (${where}): ${e.message}`);
      }
      throw e;
    }
    console.log(`ok ${describe(obj)}`);
    count++;
  }
  return count;
}

// ---- self-check --------------------------------------------------------------

// Classes whose schemas carry free-form JSON Schema (CRD definitions): some
// of their fields are annotation-only to Ajv and are never read. transferd
// deploys no CRDs, and KINDS holds none of these.
const SELF_CHECK_EXEMPT = /\/apiextensions\.k8s\.io\/v1(beta1)?\/(JSONSchemaProps|CustomResourceColumnDefinition|ExternalDocumentation)\.js$/;

async function selfCheck() {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const roots = [
    path.join(here, "node_modules/kubernetes-models"),
    path.join(here, "node_modules/@kubernetes-models/apimachinery"),
  ];
  const walk = (d) =>
    fs
      .readdirSync(d, { withFileTypes: true })
      .flatMap((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : [path.join(d, e.name)]));
  let checked = 0;
  const bad = [];
  for (const root of roots) {
    for (const file of walk(root)) {
      if (!file.endsWith(".js") || file.includes("/_schemas/") || file.endsWith("index.js")) continue;
      if (SELF_CHECK_EXEMPT.test(file)) continue;
      const js = fs.readFileSync(file, "utf8");
      const m = js.match(/import\{validate\}from"([^"]+)"/);
      const dtsFile = file.replace(/\.js$/, ".d.ts");
      if (!m || !fs.existsSync(dtsFile)) continue;
      const iface = fs.readFileSync(dtsFile, "utf8").match(/export interface I\w+ \{([\s\S]*?)\n\}/);
      if (!iface) continue;
      const declared = [...iface[1].matchAll(/^ {4}"([^"]+)"\??:/gm)].map((x) => x[1]);
      const { validate } = await import(path.resolve(path.dirname(file), m[1]));
      const read = new Set();
      validate(new Proxy({}, { get: (t, k) => (read.add(k), t[k]) }));
      checked++;
      const unread = declared.filter((k) => !read.has(k));
      if (unread.length) bad.push(`${path.relative(here, file)}: ${unread.join(", ")}`);
    }
  }
  if (checked < 100) {
    console.error(`self-check: only ${checked} model classes found; package layout changed?`);
    return 1;
  }
  if (bad.length) {
    console.error("self-check: declared fields the compiled schemas never read " +
      "(they would be reported as unknown):\n  " + bad.join("\n  "));
    return 1;
  }
  console.log(`self-check: ok, ${checked} model classes; every declared field is read by its schema`);
  return 0;
}

// ---- main ------------------------------------------------------------------

async function main(argv) {
  if (argv.includes("-h") || argv.includes("--help")) {
    console.log("usage: validate.mjs [--self-check] [FILE...]   (no FILE or '-': stdin)");
    return 0;
  }
  if (argv[0] === "--self-check") return selfCheck();
  const files = argv.length ? argv : ["-"];
  let total = 0;
  try {
    for (const f of files) {
      total += validateText(readInput(f), f === "-" ? "stdin" : f);
    }
  } catch (e) {
    if (e instanceof Invalid) {
      console.error(`INVALID ${e.message}`);
      return 1;
    }
    if (e.code === "ENOENT" || e.code === "EISDIR") {
      console.error(`validate.mjs: ${e.message}`);
      return 2;
    }
    throw e;
  }
  if (total === 0) {
    console.error("validate.mjs: no objects in the input");
    return 1;
  }
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
