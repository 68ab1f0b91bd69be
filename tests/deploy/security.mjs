#!/usr/bin/env node
// Security properties of rendered manifests (the output of `kubectl
// kustomize`), for validate.sh: what a schema cannot see.
//
//   node security.mjs [--tls] [--monitoring]  < rendered-manifests.yaml
//
// Always:
//   - tokens are on: TRANSFERD_TOKEN_FILE is set (env or envFrom ConfigMap)
//     to a file inside a read-only mount of a Secret volume, and
//     TRANSFERD_INSECURE_NO_AUTH is not turned on;
//   - no open ingress: every ingress rule of every NetworkPolicy that selects
//     the pods names its sources; a source is either pods labelled
//     transferd-client: "true" in the same namespace, or (metrics port only)
//     a namespace picked by name; no ipBlock, no empty selector.
// --monitoring: the `monitoring` namespace is admitted on the metrics port.
// --tls: TRANSFERD_TLS_CERT and TRANSFERD_TLS_KEY lie in a mount of the
//   Secret a cert-manager Certificate (usage "server auth") writes;
//   TRANSFERD_ALLOW_PLAINTEXT is "false" (over the image's "true"); the
//   three probes ask the plaintext health-only
//   port (TRANSFERD_HEALTH_LISTEN = container port `health`), not gRPC's.
// Without --tls: the probes ask the gRPC port.
//
// Prints what it checked; on a problem prints it on stderr and exits 1.
import path from "node:path";

import { Problem, load, name, ofKind, setting } from "./manifests.mjs";

const CLIENT_LABEL = ["transferd-client", "true"];
const GRPC_PORT = 50051;
const METRICS_PORT = 8080;

// An empty podSelector ({}) selects every pod of the namespace.
const selects = (selector, labels) =>
  Object.entries(selector?.matchLabels ?? {}).every(([k, v]) => labels?.[k] === v) &&
  !(selector?.matchExpressions?.length);

// The Secret volume whose read-only mount holds `file`, or a Problem.
function secretHolding(pod, container, file, what) {
  const mount = (container.volumeMounts ?? []).find(
    (m) => file.startsWith(m.mountPath.replace(/\/?$/, "/")),
  );
  if (!mount) throw new Problem(`${what} ${file} is in no volume mount of the container`);
  if (mount.readOnly !== true) throw new Problem(`${what}: the mount ${mount.mountPath} is not readOnly`);
  const volume = (pod.spec.volumes ?? []).find((v) => v.name === mount.name);
  if (!volume?.secret) throw new Problem(`${what}: volume ${mount.name} (${mount.mountPath}) is not a Secret`);
  return { mount, secret: volume.secret };
}

const portOf = (listen, what) => {
  const m = /:(\d+)$/.exec(String(listen ?? ""));
  if (!m) throw new Problem(`${what} ${JSON.stringify(listen)} is not HOST:PORT`);
  return Number(m[1]);
};

function check(objs, flags) {
  const notes = [];
  const sets = ofKind(objs, "StatefulSet");
  if (sets.length !== 1) throw new Problem(`expected one StatefulSet, found ${sets.length}`);
  const pod = sets[0].spec.template;
  const container = pod.spec.containers.find((c) => c.name === "transferd");
  if (!container) throw new Problem("no container named transferd");

  // Tokens.
  const tokens = setting(objs, container, "TRANSFERD_TOKEN_FILE");
  if (!tokens) throw new Problem("TRANSFERD_TOKEN_FILE is not set: callers would not authenticate");
  const insecure = setting(objs, container, "TRANSFERD_INSECURE_NO_AUTH");
  if (insecure !== undefined && !["", "false", "0"].includes(String(insecure).toLowerCase())) {
    throw new Problem(`TRANSFERD_INSECURE_NO_AUTH is ${JSON.stringify(insecure)}`);
  }
  const held = secretHolding(pod, container, tokens, "TRANSFERD_TOKEN_FILE");
  notes.push(`tokens from Secret ${held.secret.secretName} (${tokens})`);

  // Ingress.
  let policies = 0;
  let monitoringAdmitted = false;
  for (const np of ofKind(objs, "NetworkPolicy")) {
    if (!selects(np.spec.podSelector, pod.metadata.labels)) continue;
    if (!(np.spec.policyTypes ?? ["Ingress"]).includes("Ingress")) continue;
    policies++;
    for (const [i, rule] of (np.spec.ingress ?? []).entries()) {
      const at = `${name(np)} spec.ingress[${i}]`;
      if (!rule.from?.length) throw new Problem(`${at} has no \`from\`: it admits every source`);
      const ports = (rule.ports ?? []).map((p) => p.port);
      for (const [j, peer] of rule.from.entries()) {
        const where = `${at}.from[${j}]`;
        if (peer.ipBlock) throw new Problem(`${where}: an ipBlock admits addresses, not labelled clients`);
        if (peer.namespaceSelector) {
          const ns = peer.namespaceSelector.matchLabels?.["kubernetes.io/metadata.name"];
          if (!ns || peer.podSelector) {
            throw new Problem(`${where}: a namespace source must be one namespace by name (kubernetes.io/metadata.name)`);
          }
          if (ports.length === 0 || ports.some((p) => p !== METRICS_PORT && p !== "http")) {
            throw new Problem(`${where}: namespace ${ns} may reach only the metrics port ${METRICS_PORT} (rule ports: ${ports.join(", ") || "all"})`);
          }
          if (ns === "monitoring") monitoringAdmitted = true;
          continue;
        }
        const labels = peer.podSelector?.matchLabels ?? {};
        if (labels[CLIENT_LABEL[0]] !== CLIENT_LABEL[1] || peer.podSelector.matchExpressions?.length) {
          throw new Problem(`${where}: pods must be selected by ${CLIENT_LABEL[0]}: "${CLIENT_LABEL[1]}" (is ${JSON.stringify(peer.podSelector ?? {})})`);
        }
      }
    }
  }
  if (policies === 0) throw new Problem("no NetworkPolicy restricts ingress to the transferd pods");
  notes.push(`ingress only from ${CLIENT_LABEL[0]}=${CLIENT_LABEL[1]} pods${monitoringAdmitted ? " and namespace monitoring (metrics)" : ""}`);
  if (flags.includes("--monitoring") && !monitoringAdmitted) {
    throw new Problem(`the monitoring namespace is not admitted on the metrics port ${METRICS_PORT}`);
  }

  // TLS and the probes.
  const probes = ["startupProbe", "readinessProbe", "livenessProbe"].map((p) => [p, container[p]]);
  for (const [p, probe] of probes) {
    if (!probe?.grpc) throw new Problem(`${p} is not a gRPC probe`);
  }
  if (flags.includes("--tls")) {
    const plaintext = setting(objs, container, "TRANSFERD_ALLOW_PLAINTEXT");
    if (plaintext === undefined || !["false", "0"].includes(String(plaintext).toLowerCase())) {
      // The images set TRANSFERD_ALLOW_PLAINTEXT=true: only an explicit
      // "false" turns it off.
      throw new Problem(`TLS: TRANSFERD_ALLOW_PLAINTEXT is ${JSON.stringify(plaintext)}, not "false" (the image's own default is "true")`);
    }
    const certs = ofKind(objs, "Certificate").filter((c) => c.spec.usages?.includes("server auth"));
    for (const key of ["TRANSFERD_TLS_CERT", "TRANSFERD_TLS_KEY"]) {
      const file = setting(objs, container, key);
      if (!file) throw new Problem(`TLS: ${key} is not set`);
      const { secret } = secretHolding(pod, container, file, key);
      if (!certs.some((c) => c.spec.secretName === secret.secretName)) {
        throw new Problem(`TLS: ${key} is in Secret ${secret.secretName}, which no Certificate (usage "server auth") writes`);
      }
      const expected = { TRANSFERD_TLS_CERT: "tls.crt", TRANSFERD_TLS_KEY: "tls.key" }[key];
      if (path.basename(file) !== expected) throw new Problem(`TLS: ${key} is ${file}, not the Secret's ${expected}`);
    }
    const health = portOf(setting(objs, container, "TRANSFERD_HEALTH_LISTEN"), "TRANSFERD_HEALTH_LISTEN");
    const cport = container.ports?.find((p) => p.name === "health");
    if (cport?.containerPort !== health) {
      throw new Problem(`TLS: container port health is ${cport?.containerPort}, TRANSFERD_HEALTH_LISTEN says ${health}`);
    }
    for (const [p, probe] of probes) {
      if (probe.grpc.port !== health && probe.grpc.port !== "health") {
        throw new Problem(`TLS: ${p} asks port ${probe.grpc.port}, not the plaintext health port ${health} (kubelet's gRPC probes cannot speak TLS)`);
      }
    }
    notes.push(`TLS from Certificate's Secret, probes on plaintext health port ${health}`);
  } else {
    for (const [p, probe] of probes) {
      if (probe.grpc.port !== GRPC_PORT) throw new Problem(`${p} asks port ${probe.grpc.port}, not gRPC's ${GRPC_PORT}`);
    }
    notes.push(`probes on gRPC ${GRPC_PORT}`);
  }
  console.log(notes.join("; "));
}

const flags = process.argv.slice(2);
if (flags.some((f) => !["--tls", "--monitoring"].includes(f))) {
  console.error("usage: security.mjs [--tls] [--monitoring]  < rendered-manifests.yaml");
  process.exit(2);
}
try {
  check(load(), flags);
} catch (e) {
  if (!(e instanceof Problem)) throw e;
  console.error(`security.mjs: ${e.message}`);
  process.exit(1);
}
