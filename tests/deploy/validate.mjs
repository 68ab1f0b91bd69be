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
// The Prometheus Operator's ServiceMonitor and PrometheusRule
// (deploy/k8s/components/monitoring) are CustomResourceDefinitions that
// kubernetes-models has no schemas for: CRDS below checks them against small
// hand-written structural schemas instead, just as strictly (see there).
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
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
// For the metadata and label selectors of the CRD kinds. A dependency of
// kubernetes-models (pinned by package-lock.json), which has no export of them.
import { ObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";
import { LabelSelector } from "@kubernetes-models/apimachinery/apis/meta/v1/LabelSelector";

// The kinds transferd's manifests may contain. Add a class here (import it
// above) before using a new kind in deploy/k8s, or a schema to CRDS for a
// custom resource; anything else is rejected.
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
    HorizontalPodAutoscaler,
  ].map((cls) => [`${cls.apiVersion}/${cls.kind}`, cls]),
);

class Invalid extends Error {}

// ---- custom resources (Prometheus Operator) --------------------------------
//
// kubernetes-models knows only the built-in kinds, and the CRDs' own OpenAPI
// schemas are not available offline. So the two custom kinds transferd uses
// are checked against the structural schemas below: a hand-written subset of
// the Prometheus Operator's CRDs (monitoring.coreos.com/v1, operator 0.6x-0.8x),
// with the fields' types, enums, duration patterns and required fields as
// the CRDs define them. Like the API server with strict field validation,
// any field not in these schemas is an error, at the top level and inside
// spec: a misspelled `intervall` fails here instead of being pruned by the
// cluster without a word. A field the CRD has but the subset lacks fails
// too; add it to the schema (from the CRD) when the manifests need it.
// metadata and label selectors are checked with kubernetes-models' own
// ObjectMeta and LabelSelector classes, unknown fields included.

// The duration pattern of the CRDs (Prometheus's model.Duration).
const DURATION = /^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$/;

const S = {
  string: { type: "string" },
  nonEmpty: { type: "string", minLength: 1 },
  boolean: { type: "boolean" },
  integer: { type: "integer" },
  duration: { type: "string", pattern: DURATION, minLength: 1 },
  intOrString: { type: "int-or-string" },
  stringMap: { type: "map", values: { type: "string" } },
  object: (properties, required = []) => ({ type: "object", properties, required }),
  array: (items, minItems = 0) => ({ type: "array", items, minItems }),
  oneOf: (...values) => ({ type: "string", enum: values }),
  model: (cls) => ({ type: "model", cls }),
};
const SECRET_KEY = S.object({ name: S.string, key: S.string, optional: S.boolean }, ["key"]);
const CONFIGMAP_KEY = S.object({ name: S.string, key: S.string, optional: S.boolean }, ["key"]);
const SECRET_OR_CONFIGMAP = S.object({ secret: SECRET_KEY, configMap: CONFIGMAP_KEY });
const TLS_VERSION = S.oneOf("TLS10", "TLS11", "TLS12", "TLS13");

// ServiceMonitor: spec.endpoints[] are the scrape settings. TLS and the
// bearer token are here because docs/deploy.md tells how to scrape a TLS or
// token-protected /metrics with them.
const ENDPOINT = S.object({
  port: S.string,
  targetPort: S.intOrString,
  path: S.string,
  scheme: S.oneOf("http", "https"),
  params: { type: "map", values: S.array(S.string) },
  interval: S.duration,
  scrapeTimeout: S.duration,
  honorLabels: S.boolean,
  honorTimestamps: S.boolean,
  followRedirects: S.boolean,
  enableHttp2: S.boolean,
  filterRunning: S.boolean,
  authorization: S.object({ type: S.string, credentials: SECRET_KEY }),
  bearerTokenSecret: SECRET_KEY,
  tlsConfig: S.object({
    ca: SECRET_OR_CONFIGMAP,
    cert: SECRET_OR_CONFIGMAP,
    keySecret: SECRET_KEY,
    caFile: S.string,
    certFile: S.string,
    keyFile: S.string,
    serverName: S.string,
    insecureSkipVerify: S.boolean,
    minVersion: TLS_VERSION,
    maxVersion: TLS_VERSION,
  }),
});
const SERVICE_MONITOR_SPEC = S.object(
  {
    jobLabel: S.string,
    targetLabels: S.array(S.string),
    podTargetLabels: S.array(S.string),
    selector: S.model(LabelSelector),
    namespaceSelector: S.object({ any: S.boolean, matchNames: S.array(S.string) }),
    endpoints: S.array(ENDPOINT, 1),
    sampleLimit: S.integer,
    targetLimit: S.integer,
  },
  ["selector", "endpoints"],
);

// PrometheusRule: spec.groups is a Prometheus rule file's `groups:`
// (promtool checks the PromQL; validate.sh runs it).
const RULE = S.object(
  {
    alert: S.nonEmpty,
    record: S.nonEmpty,
    expr: S.intOrString,
    for: S.duration,
    keep_firing_for: S.duration,
    labels: S.stringMap,
    annotations: S.stringMap,
  },
  ["expr"],
);
const PROMETHEUS_RULE_SPEC = S.object(
  {
    groups: S.array(
      S.object(
        {
          name: S.nonEmpty,
          interval: S.duration,
          limit: S.integer,
          partial_response_strategy: S.string,
          rules: S.array(RULE),
        },
        ["name"],
      ),
    ),
  },
  [],
);

// Severities the alerts may carry (routing in Alertmanager keys on them).
const SEVERITIES = ["critical", "warning", "info"];

// Rules of PrometheusRule beyond its schema: what the CRD's webhook and
// Prometheus enforce (alert xor record, unique group names), and this
// project's conventions for alerts (a severity, summary and description).
function checkPrometheusRule(spec) {
  const groups = new Set();
  for (const [g, group] of (spec.groups ?? []).entries()) {
    if (groups.has(group.name)) throw new Invalid(`spec.groups[${g}]: duplicate group name ${group.name}`);
    groups.add(group.name);
    for (const [r, rule] of (group.rules ?? []).entries()) {
      const at = `spec.groups[${g}].rules[${r}]`;
      if (("alert" in rule) === ("record" in rule)) {
        throw new Invalid(`${at}: exactly one of alert and record must be set`);
      }
      if ("record" in rule) {
        for (const k of ["for", "keep_firing_for", "annotations"]) {
          if (k in rule) throw new Invalid(`${at}: ${k} is only for alerting rules`);
        }
        continue;
      }
      const severity = rule.labels?.severity;
      if (!SEVERITIES.includes(severity)) {
        throw new Invalid(
          `${at} (alert ${rule.alert}): labels.severity must be one of ${SEVERITIES.join(", ")}` +
            ` (is ${severity === undefined ? "missing" : JSON.stringify(severity)})`,
        );
      }
      for (const k of ["summary", "description"]) {
        if (typeof rule.annotations?.[k] !== "string" || !rule.annotations[k].trim()) {
          throw new Invalid(`${at} (alert ${rule.alert}): annotations.${k} is required`);
        }
      }
    }
  }
}

// cert-manager's Certificate (cert-manager.io/v1, cert-manager 1.x), for
// deploy/k8s/components/tls. Durations are Go's time.Duration strings.
const GO_DURATION = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;
const goDuration = { type: "string", pattern: GO_DURATION, minLength: 1 };
const KEY_USAGES = [
  "signing", "digital signature", "content commitment", "key encipherment",
  "key agreement", "data encipherment", "cert sign", "crl sign",
  "encipher only", "decipher only", "any", "server auth", "client auth",
  "code signing", "email protection", "s/mime", "ipsec end system",
  "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
  "microsoft sgc", "netscape sgc",
];
const CERTIFICATE_SPEC = S.object(
  {
    secretName: S.nonEmpty,
    secretTemplate: S.object({ annotations: S.stringMap, labels: S.stringMap }),
    commonName: S.string,
    dnsNames: S.array(S.nonEmpty),
    ipAddresses: S.array(S.nonEmpty),
    uris: S.array(S.nonEmpty),
    duration: goDuration,
    renewBefore: goDuration,
    isCA: S.boolean,
    usages: S.array(S.oneOf(...KEY_USAGES)),
    privateKey: S.object({
      algorithm: S.oneOf("RSA", "ECDSA", "Ed25519"),
      size: S.integer,
      encoding: S.oneOf("PKCS1", "PKCS8"),
      rotationPolicy: S.oneOf("Never", "Always"),
    }),
    issuerRef: S.object({ name: S.nonEmpty, kind: S.string, group: S.string }, ["name"]),
  },
  ["secretName", "issuerRef"],
);

const CRDS = new Map([
  ["cert-manager.io/v1/Certificate", { spec: CERTIFICATE_SPEC }],
  ["monitoring.coreos.com/v1/ServiceMonitor", { spec: SERVICE_MONITOR_SPEC }],
  ["monitoring.coreos.com/v1/PrometheusRule", { spec: PROMETHEUS_RULE_SPEC, check: checkPrometheusRule }],
]);

function typeOf(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  if (Number.isInteger(v)) return "integer";
  return typeof v;
}

// Checks `value` against a schema of S above; throws Invalid naming the path.
function checkShape(value, schema, at) {
  const want = (what) => new Invalid(`${at} must be ${what} (is ${typeOf(value)})`);
  switch (schema.type) {
    case "string":
      if (typeof value !== "string") throw want("a string");
      if (schema.minLength && value.length < schema.minLength) throw new Invalid(`${at} must not be empty`);
      if (schema.pattern && !schema.pattern.test(value)) {
        throw new Invalid(`${at} must match ${schema.pattern} (is ${JSON.stringify(value)})`);
      }
      if (schema.enum && !schema.enum.includes(value)) {
        throw new Invalid(`${at} must be one of ${schema.enum.join(", ")} (is ${JSON.stringify(value)})`);
      }
      return;
    case "boolean":
      if (typeof value !== "boolean") throw want("a boolean");
      return;
    case "integer":
      if (!Number.isInteger(value)) throw want("an integer");
      return;
    case "int-or-string":
      if (typeof value !== "string" && !Number.isInteger(value)) throw want("an integer or a string");
      return;
    case "map":
      if (!isObject(value) || Array.isArray(value)) throw want("a mapping");
      for (const [k, v] of Object.entries(value)) checkShape(v, schema.values, `${at}.${k}`);
      return;
    case "array":
      if (!Array.isArray(value)) throw want("a list");
      if (value.length < schema.minItems) throw new Invalid(`${at} must have at least ${schema.minItems} item(s)`);
      value.forEach((v, i) => checkShape(v, schema.items, `${at}[${i}]`));
      return;
    case "object": {
      if (!isObject(value) || Array.isArray(value)) throw want("a mapping");
      const unknown = Object.keys(value).filter((k) => !(k in schema.properties));
      if (unknown.length) {
        throw new Invalid(`unknown field${unknown.length > 1 ? "s" : ""} ` +
          `${unknown.map((k) => `${at}.${k}`).join(", ")}`);
      }
      for (const k of schema.required) {
        if (!(k in value)) throw new Invalid(`${at}.${k} is required`);
      }
      for (const [k, v] of Object.entries(value)) checkShape(v, schema.properties[k], `${at}.${k}`);
      return;
    }
    case "model":
      checkModel(schema.cls, value, at);
      return;
    default:
      throw new Error(`validate.mjs: bad schema type ${schema.type}`);
  }
}

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

// A part of a custom resource (metadata, a label selector) that a
// kubernetes-models class describes: its .validate() plus unknown fields.
function checkModel(cls, value, at) {
  if (!isObject(value) || Array.isArray(value)) throw new Invalid(`${at} must be a mapping`);
  try {
    new cls(value).validate();
  } catch (e) {
    throw new Invalid(`${at}: ${e.message}`);
  }
  const unknown = unknownFields(cls, value);
  if (unknown.length) {
    throw new Invalid(
      `unknown field${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => `${at}.${k}`).join(", ")} ` +
        `(not in the ${cls.name} schema; misspelled?)`,
    );
  }
}

function validateCustomResource(obj, crd) {
  const what = `${obj.apiVersion} ${obj.kind}`;
  const unknown = Object.keys(obj).filter((k) => !["apiVersion", "kind", "metadata", "spec"].includes(k));
  if (unknown.length) {
    throw new Invalid(`unknown field${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")} (not in the ${what} schema; misspelled?)`);
  }
  checkModel(ObjectMeta, obj.metadata, "metadata");
  if (!("spec" in obj)) throw new Invalid("spec is required");
  try {
    checkShape(obj.spec, crd.spec, "spec");
  } catch (e) {
    if (e instanceof Invalid && e.message.startsWith("unknown field") && !e.message.includes("(not in")) {
      throw new Invalid(`${e.message} (not in validate.mjs's ${what} schema; misspelled? ` +
        "if the CRD has it, add it to the schema in CRDS)");
    }
    throw e;
  }
  crd.check?.(obj.spec);
}

function validateObject(obj) {
  if (!isObject(obj) || Array.isArray(obj)) {
    throw new Invalid("not a mapping");
  }
  if (typeof obj.apiVersion !== "string" || typeof obj.kind !== "string") {
    throw new Invalid("apiVersion and kind must be strings");
  }
  const crd = CRDS.get(`${obj.apiVersion}/${obj.kind}`);
  if (crd) {
    if (!isObject(obj.metadata) || typeof obj.metadata.name !== "string" || !obj.metadata.name) {
      throw new Invalid("metadata.name is required");
    }
    validateCustomResource(obj, crd);
    return;
  }
  const cls = KINDS.get(`${obj.apiVersion}/${obj.kind}`);
  if (!cls) {
    throw new Invalid(
      `unknown kind ${obj.apiVersion}/${obj.kind} (known: ${[...KINDS.keys(), ...CRDS.keys()].join(", ")})`,
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
