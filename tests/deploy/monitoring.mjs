#!/usr/bin/env node
// Checks of the metrics wiring in rendered manifests (the output of
// `kubectl kustomize`), for validate.sh. Two modes, input from stdin:
//
//   node monitoring.mjs wiring   the HTTP metrics port of every server (the
//                                primary StatefulSet, a Deployment of serving
//                                replicas, a StatefulSet of data-parallel
//                                workers) is wired end to end:
//                                TRANSFERD_HTTP_LISTEN (all interfaces) ->
//                                container port `http` -> the one Service
//                                selecting the pods (no other), port `http`
//                                -> admitted by the NetworkPolicy, and, when
//                                there are ServiceMonitors, that one selects
//                                each such Service, each selects one of them,
//                                and scrapes that port at
//                                /metrics. validate.mjs checks each object's
//                                schema; this checks that they fit together,
//                                which no schema can (a renamed port or a
//                                selector that matches nothing is valid YAML
//                                and scrapes nothing).
//   node monitoring.mjs rules [--no-annotations]
//                                prints the spec.groups of every
//                                PrometheusRule as one Prometheus rule file,
//                                for `promtool check rules` / `test rules`;
//                                --no-annotations leaves the alerts'
//                                annotations out (for alerts.test.yaml).
//
// Prints what it checked (wiring) or the rule file (rules); on a problem
// prints it on stderr and exits 1.
import { stringify } from "yaml";

import { Problem, load, name, ofKind, primaryOf, setting, workloads } from "./manifests.mjs";

// matchLabels only: the manifests use no matchExpressions.
const selects = (matchLabels, labels) =>
  Object.keys(matchLabels ?? {}).length > 0 &&
  Object.entries(matchLabels).every(([k, v]) => labels?.[k] === v);

// One server's wiring (the primary StatefulSet, a Deployment of serving
// replicas, or a StatefulSet of workers): returns its Service and notes.
function wireServer(objs, { workload, pod, container }) {
  const notes = [];
  // The listen address: a flag, env, or a ConfigMap in envFrom.
  const listen = setting(objs, container, "TRANSFERD_HTTP_LISTEN");
  if (listen === undefined) throw new Problem(`${name(workload)}: TRANSFERD_HTTP_LISTEN is not set (env or envFrom ConfigMap)`);
  const m = /^(.*):(\d+)$/.exec(String(listen));
  if (!m) throw new Problem(`TRANSFERD_HTTP_LISTEN ${JSON.stringify(listen)} is not HOST:PORT`);
  const [host, port] = [m[1], Number(m[2])];
  if (!["0.0.0.0", "[::]", ""].includes(host)) {
    throw new Problem(`TRANSFERD_HTTP_LISTEN ${listen}: must listen on all interfaces (0.0.0.0), or nothing outside the pod can scrape it`);
  }
  notes.push(`TRANSFERD_HTTP_LISTEN ${listen}`);

  const cport = container.ports?.find((p) => p.name === "http");
  if (!cport) throw new Problem(`${name(workload)}: container transferd has no port named http`);
  if (cport.containerPort !== port) {
    throw new Problem(`${name(workload)}: container port http is ${cport.containerPort}, TRANSFERD_HTTP_LISTEN says ${port}`);
  }
  notes.push(`container port http ${port}`);

  // Exactly one: two Services over the same pods (the primary's selecting
  // the replicas too, or the other way round) would mix the servers.
  const services = ofKind(objs, "Service").filter((s) => selects(s.spec.selector, pod.metadata.labels));
  if (services.length !== 1) {
    throw new Problem(`expected one Service selecting the pods of ${name(workload)}, found ${services.length}` +
      `${services.length ? ` (${services.map(name).join(", ")})` : ""}`);
  }
  const svc = services[0];
  const sport = svc.spec.ports?.find((p) => p.name === "http");
  if (!sport) throw new Problem(`${name(svc)}: no port named http`);
  if (sport.targetPort !== "http" && sport.targetPort !== port) {
    throw new Problem(`${name(svc)}: port http targets ${sport.targetPort}, not the container port http (${port})`);
  }
  notes.push(`${name(svc)} port http ${sport.port}`);

  const monitored = ofKind(objs, "ServiceMonitor").length > 0;
  for (const np of ofKind(objs, "NetworkPolicy")) {
    if (!selects(np.spec.podSelector?.matchLabels, pod.metadata.labels)) continue;
    if (!(np.spec.policyTypes ?? ["Ingress"]).includes("Ingress")) continue;
    const toPort = (rule) => !rule.ports || rule.ports.some((p) => p.port === port || p.port === "http");
    const admits = (np.spec.ingress ?? []).some(toPort);
    if (!admits) throw new Problem(`${name(np)} does not admit ingress to port ${port}: nothing could scrape`);
    // Prometheus runs in a namespace of its own: with a ServiceMonitor, some
    // rule must admit the port from a namespace (not only same-namespace pods).
    const fromNamespace = (np.spec.ingress ?? []).some(
      (rule) => toPort(rule) && (!rule.from || rule.from.some((peer) => peer.namespaceSelector)),
    );
    if (monitored && !fromNamespace) {
      throw new Problem(`${name(np)} admits port ${port} from no other namespace: Prometheus could not scrape`);
    }
    notes.push(`${name(np)} admits ${port}${fromNamespace ? " (also from another namespace)" : " (same-namespace clients)"}`);
  }

  // With the Prometheus Operator, every server is scraped.
  if (monitored && !ofKind(objs, "ServiceMonitor").some((sm) => selects(sm.spec.selector?.matchLabels, svc.metadata.labels))) {
    throw new Problem(`no ServiceMonitor selects ${name(svc)}: the pods of ${name(workload)} would not be scraped`);
  }
  return { svc, notes };
}

function wiring(objs) {
  const primary = primaryOf(objs).workload;
  const servers = workloads(objs);
  // The primary first.
  servers.sort((a, b) => (b.workload === primary) - (a.workload === primary));
  const notes = [];
  const services = [];
  for (const server of servers) {
    const { svc, notes: mine } = wireServer(objs, server);
    services.push(svc);
    notes.push(servers.length > 1 ? `${name(server.workload)}: ${mine.join(", ")}` : mine.join("; "));
  }

  for (const sm of ofKind(objs, "ServiceMonitor")) {
    const svc = services.find((s) => selects(sm.spec.selector?.matchLabels, s.metadata.labels));
    if (!svc) {
      throw new Problem(`${name(sm)}: selector ${JSON.stringify(sm.spec.selector)} does not match ${services.map((s) => `${name(s)}'s`).join(" or ")} labels`);
    }
    for (const ep of sm.spec.endpoints) {
      if (ep.port !== "http") throw new Problem(`${name(sm)}: endpoint port ${ep.port}, not the Service's port http`);
      if (ep.path !== "/metrics") throw new Problem(`${name(sm)}: endpoint path ${ep.path}, not /metrics`);
    }
    const jobLabel = sm.spec.jobLabel;
    if (jobLabel && svc.metadata.labels?.[jobLabel] !== "transferd") {
      // The PrometheusRule's alerts select job="transferd".
      throw new Problem(`${name(sm)}: jobLabel ${jobLabel} is not "transferd" on ${name(svc)}`);
    }
    notes.push(`${name(sm)} scrapes ${name(svc)} port http /metrics`);
  }
  console.log(notes.join("; "));
}

function rules(objs, flags) {
  const groups = ofKind(objs, "PrometheusRule").flatMap((r) => r.spec.groups ?? []);
  if (groups.length === 0) throw new Problem("no PrometheusRule with groups in the input");
  if (flags.includes("--no-annotations")) {
    for (const g of groups) for (const r of g.rules ?? []) delete r.annotations;
  }
  process.stdout.write(stringify({ groups }, { lineWidth: 0 }));
}

const modes = { wiring: [], rules: ["--no-annotations"] };
const [modeName, ...flags] = process.argv.slice(2);
if (!(modeName in modes) || flags.some((f) => !modes[modeName].includes(f))) {
  console.error("usage: monitoring.mjs wiring|rules [--no-annotations]  < rendered-manifests.yaml");
  process.exit(2);
}
try {
  ({ wiring, rules })[modeName](load(), flags);
} catch (e) {
  if (!(e instanceof Problem)) throw e;
  console.error(`monitoring.mjs ${process.argv[2]}: ${e.message}`);
  process.exit(1);
}
