// Helpers shared by the checks of rendered manifests (the output of
// `kubectl kustomize`): monitoring.mjs, security.mjs and serving.mjs.
import fs from "node:fs";
import { parseAllDocuments } from "yaml";

// A problem with the manifests (not a bug of the checker): printed, exit 1.
export class Problem extends Error {}

// Every object of the multi-document YAML on stdin.
export function load() {
  const docs = parseAllDocuments(fs.readFileSync(0, "utf8"));
  for (const d of docs) if (d.errors.length) throw new Problem(`YAML error: ${d.errors[0].message}`);
  return docs.map((d) => d.toJS()).filter((o) => o && typeof o === "object");
}

export const ofKind = (objs, kind) => objs.filter((o) => o.kind === kind);
export const name = (o) => `${o.kind}/${o.metadata?.name}`;

// matchLabels selection: a selector with labels, all of them on `labels`.
// An empty selector, or one with matchExpressions (the manifests use none),
// selects nothing here, so that a check built on it fails instead of
// passing for every pod.
export const selects = (selector, labels) =>
  Object.keys(selector?.matchLabels ?? {}).length > 0 &&
  !selector?.matchExpressions?.length &&
  Object.entries(selector.matchLabels).every(([k, v]) => labels?.[k] === v);

// The transferd servers of the manifests: every StatefulSet (the primary,
// and the data-parallel workers of deploy/k8s/components/workers) and
// Deployment (serving replicas, deploy/k8s/components/serving) with its pod
// template and its container `transferd`.
export function workloads(objs) {
  return objs
    .filter((o) => o.kind === "StatefulSet" || o.kind === "Deployment")
    .map((w) => {
      const pod = w.spec?.template;
      const container = pod?.spec?.containers?.find((c) => c.name === "transferd");
      if (!container) throw new Problem(`${name(w)}: no container named transferd`);
      return { workload: w, pod, container };
    });
}

// The primary: the one StatefulSet that is no worker (its container does
// not set TRANSFERD_COORDINATOR), as a workloads() entry. It trains, owns the
// aliases, and is the coordinator of the workers and the primary the serving
// replicas follow.
export function primaryOf(objs) {
  const sets = workloads(objs).filter(
    (w) => w.workload.kind === "StatefulSet" && !setting(objs, w.container, "TRANSFERD_COORDINATOR"),
  );
  if (sets.length !== 1) {
    throw new Problem(`expected one primary StatefulSet (TRANSFERD_COORDINATOR not set), found ${sets.length}` +
      `${sets.length ? ` (${sets.map((w) => name(w.workload)).join(", ")})` : ""}`);
  }
  return sets[0];
}

// The value a setting has in the container: a flag in command/args first
// (`--flag=value`, `--flag value`, or a bare `--flag` = "true"), then env,
// then its envFrom ConfigMaps (later ones win, as in Kubernetes); undefined
// when unset. An env entry with valueFrom, known only in the pod, gives
// what it refers to: "fieldRef:status.podIP", "secretKeyRef:NAME/KEY", ...
const FLAGS = {
  TRANSFERD_HTTP_LISTEN: "--http-listen",
  TRANSFERD_TOKEN_FILE: "--token-file",
  TRANSFERD_INSECURE_NO_AUTH: "--insecure-no-auth",
  TRANSFERD_ALLOW_PLAINTEXT: "--allow-plaintext",
  TRANSFERD_TLS_CERT: "--tls-cert",
  TRANSFERD_TLS_KEY: "--tls-key",
  TRANSFERD_HEALTH_LISTEN: "--health-listen",
  TRANSFERD_DATA_DIR: "--data-dir",
  TRANSFERD_SHUTDOWN_GRACE: "--shutdown-grace",
  TRANSFERD_FOLLOW: "--follow",
  TRANSFERD_FOLLOW_TOKEN_FILE: "--follow-token-file",
  TRANSFERD_FOLLOW_TLS: "--follow-tls",
  TRANSFERD_FOLLOW_CA: "--follow-ca",
  TRANSFERD_FOLLOW_SERVER_NAME: "--follow-server-name",
  TRANSFERD_COORDINATOR: "--coordinator",
  TRANSFERD_WORKER_NAME: "--worker-name",
  TRANSFERD_WORKER_TOKEN_FILE: "--worker-token-file",
  TRANSFERD_COORDINATOR_TLS: "--coordinator-tls",
  TRANSFERD_COORDINATOR_CA: "--coordinator-ca",
  TRANSFERD_RENDEZVOUS_ADDRESS: "--rendezvous-address",
  TRANSFERD_RENDEZVOUS_PORT: "--rendezvous-port",
  TRANSFERD_DEVICE: "--device",
};
const BOOL_FLAGS = ["TRANSFERD_INSECURE_NO_AUTH", "TRANSFERD_ALLOW_PLAINTEXT", "TRANSFERD_FOLLOW_TLS", "TRANSFERD_COORDINATOR_TLS"];

// What an env entry's valueFrom refers to.
function valueFrom(from) {
  if (from.fieldRef) return `fieldRef:${from.fieldRef.fieldPath}`;
  if (from.resourceFieldRef) return `resourceFieldRef:${from.resourceFieldRef.resource}`;
  if (from.secretKeyRef) return `secretKeyRef:${from.secretKeyRef.name}/${from.secretKeyRef.key}`;
  if (from.configMapKeyRef) return `configMapKeyRef:${from.configMapKeyRef.name}/${from.configMapKeyRef.key}`;
  return "valueFrom";
}
export function setting(objs, container, key) {
  const argv = [...(container.command ?? []), ...(container.args ?? [])].map(String);
  const flag = FLAGS[key];
  let fromArgs;
  argv.forEach((a, i) => {
    if (!flag) return;
    if (a.startsWith(`${flag}=`)) fromArgs = a.slice(flag.length + 1);
    else if (a === flag) {
      const next = argv[i + 1];
      const isBool = BOOL_FLAGS.includes(key);
      fromArgs = isBool || next === undefined || next.startsWith("-") ? "true" : next;
    }
  });
  if (fromArgs !== undefined) return fromArgs;
  const direct = container.env?.find((e) => e.name === key);
  if (direct) return direct.valueFrom ? valueFrom(direct.valueFrom) : direct.value;
  let value;
  for (const ref of container.envFrom ?? []) {
    const cm = ofKind(objs, "ConfigMap").find((c) => c.metadata.name === ref.configMapRef?.name);
    if (cm?.data?.[key] !== undefined) value = cm.data[key];
  }
  return value;
}

