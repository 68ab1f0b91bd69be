#!/usr/bin/env node
// Security properties of rendered manifests (the output of `kubectl
// kustomize`), for validate.sh: what a schema cannot see.
//
//   node security.mjs [--tls] [--monitoring] [--serving] [--workers]  < rendered-manifests.yaml
//
// For every transferd server of the manifests (the primary StatefulSet, the
// Deployment of serving replicas and the StatefulSet of data-parallel
// workers where there are):
//   - hardened: the pod runs as the image's user 10001 (runAsNonRoot), with
//     a RuntimeDefault (or Localhost) seccomp profile, no host namespaces,
//     no service account token and no service links; the container
//     transferd with a read-only root filesystem, no privilege escalation,
//     every capability dropped (none added, not privileged), CPU and memory
//     requests and a memory limit;
//   - tokens are on: TRANSFERD_TOKEN_FILE is set (env or envFrom ConfigMap)
//     to a file inside a read-only mount of a Secret volume, and
//     TRANSFERD_INSECURE_NO_AUTH is not turned on;
//   - no open ingress: every ingress rule of every NetworkPolicy that selects
//     the pods names its sources; a source is either pods labelled
//     transferd-client: "true" in the same namespace, or (metrics port only)
//     a namespace picked by name, or (gRPC port only) the serving replicas
//     of the manifests by their labels, or (TCP only, any port) the ranks of
//     data-parallel jobs, the primary and the workers, by their labels; no
//     ipBlock, no empty selector.
// For every serving replica (a container with TRANSFERD_FOLLOW): it sends
//   the primary a token (TRANSFERD_FOLLOW_TOKEN_FILE in a read-only Secret
//   mount, not the callers' token file), and TRANSFERD_FOLLOW names a
//   Service of the primary (not of the replicas) on a port whose target the
//   primary's NetworkPolicies admit the replicas to.
// For every worker (a container with TRANSFERD_COORDINATOR): it sends the
//   coordinator a token (TRANSFERD_WORKER_TOKEN_FILE in a read-only Secret
//   mount, not the callers' token file), and TRANSFERD_COORDINATOR names a
//   Service of the primary (not of the workers) on a port whose target the
//   primary's NetworkPolicies admit the workers to; they admit the workers
//   on the rendezvous port (the primary's TRANSFERD_RENDEZVOUS_PORT, 29500
//   by default) and on all TCP, and the workers' own admit the primary and
//   every worker on all TCP (Gloo connects the ranks on ephemeral ports, in
//   both directions).
// --serving: there is one such workload of replicas.
// --workers: there is one such workload of workers.
// --monitoring: the `monitoring` namespace is admitted on the metrics port.
// --tls: for every server (replicas included), TRANSFERD_TLS_CERT and
//   TRANSFERD_TLS_KEY lie in a mount of the Secret a cert-manager
//   Certificate (usage "server auth") writes, and that Certificate's
//   dnsNames carry the name of every Service that selects the server's pods;
//   TRANSFERD_ALLOW_PLAINTEXT is "false" (over the image's "true"); the
//   three probes ask the plaintext health-only
//   port (TRANSFERD_HEALTH_LISTEN = container port `health`), not gRPC's.
//   For every serving replica: it checks the primary's certificate,
//   TRANSFERD_FOLLOW_CA being key ca.crt of a Secret (read-only mount) that
//   a Certificate from the primary's issuer writes, for a name the primary's
//   Certificate carries (TRANSFERD_FOLLOW_SERVER_NAME, or the host of
//   TRANSFERD_FOLLOW); and no volume of it holds the primary's private key.
// Without --tls: the probes ask the gRPC port.
//
// Prints what it checked; on a problem prints it on stderr and exits 1.
import path from "node:path";

import { Problem, load, name, ofKind, primaryOf, selects, setting, workloads } from "./manifests.mjs";

const CLIENT_LABEL = ["transferd-client", "true"];
const GRPC_PORT = 50051;
const METRICS_PORT = 8080;
// The server's default TRANSFERD_RENDEZVOUS_PORT.
const RENDEZVOUS_PORT = 29500;
// The images' user and group (deploy/docker: USER 10001:10001).
const IMAGE_UID = 10001;

// A NetworkPolicy's podSelector: an empty one ({}) selects every pod of
// the namespace.
const policySelects = (selector, labels) =>
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

// The key of `secret` (a Secret volume source) that the file `file` under
// `mount` is: its `items` map keys to paths, or else each key is a file.
function secretKey(mount, secret, file) {
  const rel = path.relative(mount.mountPath, file);
  return secret.items ? secret.items.find((i) => path.normalize(i.path) === rel)?.key : rel;
}

// The cert-manager Certificate (usage "server auth") that writes the Secret
// `secretName`, if any.
const certificateWriting = (objs, secretName) =>
  ofKind(objs, "Certificate").find((c) => c.spec.usages?.includes("server auth") && c.spec.secretName === secretName);

const issuerOf = (cert) => {
  const { name: n, kind = "Issuer", group = "cert-manager.io" } = cert.spec.issuerRef ?? {};
  return `${group}/${kind}/${n}`;
};

// A server's TLS: the Secret mount of its certificate and key (one Secret,
// keys tls.crt and tls.key) and the Certificate that writes it, or a
// Problem.
function serverTls(objs, { pod, container, workload }) {
  const found = {};
  for (const [key, expected] of [["TRANSFERD_TLS_CERT", "tls.crt"], ["TRANSFERD_TLS_KEY", "tls.key"]]) {
    const file = setting(objs, container, key);
    if (!file) throw new Problem(`TLS: ${key} is not set`);
    const { mount, secret } = secretHolding(pod, container, file, key);
    const cert = certificateWriting(objs, secret.secretName);
    if (!cert) {
      throw new Problem(`TLS: ${key} is in Secret ${secret.secretName}, which no Certificate (usage "server auth") writes`);
    }
    if (path.basename(file) !== expected || secretKey(mount, secret, file) !== expected) {
      throw new Problem(`TLS: ${key} is ${file}, not the Secret's ${expected}`);
    }
    found[key] = { file, mount, secret, cert };
  }
  const { TRANSFERD_TLS_CERT: crt, TRANSFERD_TLS_KEY: key } = found;
  if (crt.secret.secretName !== key.secret.secretName) {
    throw new Problem(`TLS: ${name(workload)}'s certificate (Secret ${crt.secret.secretName}) and key (Secret ${key.secret.secretName}) come from different Secrets`);
  }
  return { secretName: crt.secret.secretName, cert: crt.cert, keyFile: key.file };
}

// Whether a NetworkPolicy ingress rule admits TCP port `port` (or the
// container port named `portName`): no ports at all, or an entry of
// protocol TCP (the default) with that port, a range over it, or no port.
const ruleAdmitsPort = (rule, port, portName) =>
  !rule.ports?.length ||
  rule.ports.some(
    (p) =>
      (p.protocol ?? "TCP") === "TCP" &&
      (p.port === undefined || p.port === port || (portName !== undefined && p.port === portName) ||
        (typeof p.port === "number" && p.endPort !== undefined && p.port <= port && port <= p.endPort)),
  );
// Whether it admits every TCP port: no ports at all, or an entry of
// protocol TCP without a port.
const ruleAdmitsAllTcp = (rule) =>
  !rule.ports?.length || rule.ports.some((p) => (p.protocol ?? "TCP") === "TCP" && p.port === undefined);

// Whether the NetworkPolicies that select `target`'s pods let `source`'s
// pods (same namespace) through on what `test` (a rule -> boolean) asks.
// NetworkPolicies add up: any rule of any of them will do.
const admitted = (objs, target, source, test) =>
  ofKind(objs, "NetworkPolicy").some(
    (np) =>
      policySelects(np.spec.podSelector, target.pod.metadata.labels) &&
      (np.spec.policyTypes ?? ["Ingress"]).includes("Ingress") &&
      (np.spec.ingress ?? []).some(
        (rule) =>
          test(rule) &&
          (rule.from ?? []).some((peer) => !peer.namespaceSelector && selects(peer.podSelector, source.pod.metadata.labels)),
      ),
  );

// The pod's and the container's hardening (a container's securityContext
// wins over the pod's where both have the field). Returns a note.
function checkHardening({ pod, container }) {
  const psc = pod.spec.securityContext ?? {};
  const csc = container.securityContext ?? {};
  const effective = (k) => csc[k] ?? psc[k];
  if (effective("runAsNonRoot") !== true) throw new Problem("runAsNonRoot is not true (pod or container securityContext)");
  const uid = effective("runAsUser");
  if (uid !== IMAGE_UID) throw new Problem(`runAsUser is ${uid}, not the image's user ${IMAGE_UID}`);
  const seccomp = effective("seccompProfile")?.type;
  if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") {
    throw new Problem(`seccompProfile is ${seccomp ?? "unset"}, not RuntimeDefault (or Localhost)`);
  }
  for (const k of ["hostNetwork", "hostPID", "hostIPC"]) {
    if (pod.spec[k] === true) throw new Problem(`the pod sets ${k}`);
  }
  if (pod.spec.automountServiceAccountToken !== false) {
    throw new Problem("automountServiceAccountToken is not false: the server talks to no Kubernetes API and needs no token");
  }
  if (pod.spec.enableServiceLinks !== false) {
    throw new Problem("enableServiceLinks is not false: Services would inject TRANSFERD_PORT, TRANSFERD_SERVICE_HOST, ... into the server's TRANSFERD_* settings");
  }
  if (csc.privileged === true) throw new Problem("container transferd is privileged");
  if (csc.allowPrivilegeEscalation !== false) throw new Problem("container transferd: allowPrivilegeEscalation is not false");
  if (csc.readOnlyRootFilesystem !== true) throw new Problem("container transferd: readOnlyRootFilesystem is not true");
  if (!csc.capabilities?.drop?.includes("ALL")) throw new Problem("container transferd: capabilities.drop does not hold ALL");
  if (csc.capabilities?.add?.length) throw new Problem(`container transferd adds capabilities ${csc.capabilities.add.join(", ")}`);
  const { requests = {}, limits = {} } = container.resources ?? {};
  if (!requests.cpu || !requests.memory) throw new Problem("container transferd: no CPU and memory requests (resources.requests)");
  if (!limits.memory) throw new Problem("container transferd: no memory limit (resources.limits.memory)");
  return `user ${uid} (non-root), read-only root filesystem, no privilege escalation, capabilities dropped, seccomp ${seccomp}, memory limit ${limits.memory}`;
}

const portOf = (listen, what) => {
  const m = /:(\d+)$/.exec(String(listen ?? ""));
  if (!m) throw new Problem(`${what} ${JSON.stringify(listen)} is not HOST:PORT`);
  return Number(m[1]);
};

// The checks of one server (the primary, a serving replica or a worker):
// its hardening, its tokens, the NetworkPolicies that select its pods, TLS
// and its probes. Returns notes.
function checkServer(objs, flags, server, { followers, primary, workers }) {
  const { pod, container } = server;
  const notes = [checkHardening(server)];

  // Tokens.
  const tokens = setting(objs, container, "TRANSFERD_TOKEN_FILE");
  if (!tokens) throw new Problem("TRANSFERD_TOKEN_FILE is not set: callers would not authenticate");
  const insecure = setting(objs, container, "TRANSFERD_INSECURE_NO_AUTH");
  if (insecure !== undefined && !["", "false", "0"].includes(String(insecure).toLowerCase())) {
    throw new Problem(`TRANSFERD_INSECURE_NO_AUTH is ${JSON.stringify(insecure)}`);
  }
  const held = secretHolding(pod, container, tokens, "TRANSFERD_TOKEN_FILE");
  notes.push(`tokens from Secret ${held.secret.secretName} (${tokens})`);

  // Ingress. A pod source is either labelled clients, or (gRPC port only)
  // the serving replicas of these manifests, or (TCP only) the ranks of
  // data-parallel jobs where there are workers, by their own labels.
  const followerPeer = (peer) =>
    !peer.namespaceSelector && followers.length > 0 &&
    followers.some((f) => selects(peer.podSelector, f.pod.metadata.labels));
  const ranks = workers.length > 0 ? [primary, ...workers] : [];
  const rankPeer = (peer) =>
    !peer.namespaceSelector && ranks.some((r) => selects(peer.podSelector, r.pod.metadata.labels));
  let policies = 0;
  let monitoringAdmitted = false;
  let followersAdmitted = false;
  let ranksAdmitted = false;
  for (const np of ofKind(objs, "NetworkPolicy")) {
    if (!policySelects(np.spec.podSelector, pod.metadata.labels)) continue;
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
        if (labels[CLIENT_LABEL[0]] === CLIENT_LABEL[1] && !peer.podSelector.matchExpressions?.length) continue;
        if (followerPeer(peer)) {
          const others = workloads(objs).filter(
            (w) => !followers.some((f) => f.workload === w.workload) && selects(peer.podSelector, w.pod.metadata.labels),
          );
          if (others.length) {
            throw new Problem(`${where}: the serving replicas' source also selects ${others.map((w) => name(w.workload)).join(", ")}`);
          }
          if (ports.length === 0 || ports.some((p) => p !== GRPC_PORT && p !== "grpc")) {
            throw new Problem(`${where}: serving replicas may reach only the gRPC port ${GRPC_PORT} (rule ports: ${ports.join(", ") || "all"})`);
          }
          followersAdmitted = true;
          continue;
        }
        if (rankPeer(peer)) {
          const others = workloads(objs).filter(
            (w) => !ranks.some((r) => r.workload === w.workload) && selects(peer.podSelector, w.pod.metadata.labels),
          );
          if (others.length) {
            throw new Problem(`${where}: the data-parallel ranks' source also selects ${others.map((w) => name(w.workload)).join(", ")}`);
          }
          // Gloo and the c10d TCPStore speak TCP: any port, nothing else.
          if (!rule.ports?.length) {
            throw new Problem(`${where}: the data-parallel ranks are admitted on every protocol (no ports): admit TCP only (ports: [{protocol: TCP}])`);
          }
          const other = rule.ports.find((p) => (p.protocol ?? "TCP") !== "TCP");
          if (other) throw new Problem(`${where}: the data-parallel ranks are admitted on ${other.protocol}, not TCP only`);
          ranksAdmitted = true;
          continue;
        }
        throw new Problem(`${where}: pods must be selected by ${CLIENT_LABEL[0]}: "${CLIENT_LABEL[1]}" (is ${JSON.stringify(peer.podSelector ?? {})})`);
      }
    }
  }
  if (policies === 0) throw new Problem("no NetworkPolicy restricts ingress to the transferd pods");
  notes.push(`ingress only from ${CLIENT_LABEL[0]}=${CLIENT_LABEL[1]} pods` +
    `${followersAdmitted ? ", serving replicas (gRPC)" : ""}` +
    `${ranksAdmitted ? ", data-parallel ranks (TCP)" : ""}` +
    `${monitoringAdmitted ? " and namespace monitoring (metrics)" : ""}`);
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
    const { secretName, cert } = serverTls(objs, server);
    // Clients dial the Services' names: the certificate must carry them
    // (the short name here; the namespaced ones are the overlay's to add).
    const dnsNames = cert.spec.dnsNames ?? [];
    for (const svc of ofKind(objs, "Service").filter((s) => selects({ matchLabels: s.spec.selector }, pod.metadata.labels))) {
      if (!dnsNames.includes(svc.metadata.name)) {
        throw new Problem(`TLS: ${name(svc)} selects the pods of ${name(server.workload)}, but ${name(cert)} (Secret ${secretName}) does not carry the name ${svc.metadata.name} (dnsNames: ${dnsNames.join(", ") || "none"})`);
      }
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
    notes.push(`TLS from ${name(cert)}'s Secret ${secretName}, probes on plaintext health port ${health}`);
  } else {
    for (const [p, probe] of probes) {
      if (probe.grpc.port !== GRPC_PORT) throw new Problem(`${p} asks port ${probe.grpc.port}, not gRPC's ${GRPC_PORT}`);
    }
    notes.push(`probes on gRPC ${GRPC_PORT}`);
  }
  return notes;
}

// The Service of the primary that `address` (the value of the setting
// `key` of `client`, HOST:PORT with a Service's name as the host's first
// label) names, and the primary's container port behind it; or a Problem.
// `them`: the client's pods, in the messages.
function primaryBehind(objs, { pod, workload }, primary, key, address, them) {
  const port = portOf(address, key);
  const host = address.slice(0, address.lastIndexOf(":")).split(".")[0];
  const svc = ofKind(objs, "Service").find((s) => s.metadata.name === host);
  if (!svc) throw new Problem(`${name(workload)}: ${key} ${address}: no Service ${host} in the manifests`);
  if (!selects({ matchLabels: svc.spec.selector }, primary.pod.metadata.labels)) {
    throw new Problem(`${name(workload)}: ${key} ${address}: ${name(svc)} does not select the primary ${name(primary.workload)}`);
  }
  if (selects({ matchLabels: svc.spec.selector }, pod.metadata.labels)) {
    throw new Problem(`${name(workload)}: ${key} ${address}: ${name(svc)} also selects ${them} themselves`);
  }
  const sport = svc.spec.ports?.find((p) => p.port === port);
  if (!sport) throw new Problem(`${name(workload)}: ${key} ${address}: ${name(svc)} has no port ${port}`);
  const target = sport.targetPort ?? port;
  const cport = primary.container.ports?.find((p) => p.name === target || p.containerPort === target);
  if (!cport) throw new Problem(`${name(svc)} port ${port} targets ${target}, no container port of the primary`);
  return { svc, cport };
}

// The token file a client of the primary (a replica, a worker) sends from
// (the setting `key`): set, not the callers' token file, in a read-only
// Secret mount. Returns secretHolding's answer.
function clientToken(objs, { pod, container, workload }, key, peer) {
  const tokenFile = setting(objs, container, key);
  if (!tokenFile) {
    throw new Problem(`${name(workload)} sends no token to the ${peer}: ${key} is not set (the ${peer} requires tokens)`);
  }
  if (tokenFile === setting(objs, container, "TRANSFERD_TOKEN_FILE")) {
    throw new Problem(`${name(workload)}: ${key} ${tokenFile} is the callers' token file (TOKEN ROLE lines), not a file holding one token`);
  }
  return { tokenFile, ...secretHolding(pod, container, tokenFile, key) };
}

// A serving replica's way to the primary: it authenticates with one token
// from a read-only Secret mount, and the address it follows is a Service
// of the primary whose target port the primary's NetworkPolicies admit the
// replicas to. Returns notes.
function checkFollower(objs, flags, follower, primary) {
  const { workload } = follower;
  const { tokenFile, secret } = clientToken(objs, follower, "TRANSFERD_FOLLOW_TOKEN_FILE", "primary");

  const address = String(setting(objs, follower.container, "TRANSFERD_FOLLOW"));
  const { svc, cport } = primaryBehind(objs, follower, primary, "TRANSFERD_FOLLOW", address, "the replicas");

  // NetworkPolicies add up: the replicas get through when any policy that
  // selects the primary admits them on that port.
  if (!admitted(objs, primary, follower, (rule) => ruleAdmitsPort(rule, cport.containerPort, cport.name))) {
    throw new Problem(`${name(workload)} cannot reach the primary: no NetworkPolicy of ${name(primary.workload)} admits its pods on port ${cport.containerPort}`);
  }
  const notes = [`follows ${address} (${name(svc)} -> ${name(primary.workload)} port ${cport.containerPort}, admitted) with a token from Secret ${secret.secretName} (${tokenFile})`];
  if (flags.includes("--tls")) notes.push(...checkFollowerTls(objs, follower, primary, address));
  return notes;
}

// A data-parallel worker's way to its coordinator, the primary: it
// authenticates with one token (of the role worker) from a read-only Secret
// mount, TRANSFERD_COORDINATOR is a Service of the primary whose target
// port the primary's NetworkPolicies admit the workers to; and the ranks
// reach each other on all TCP: the workers the primary (its TCPStore on the
// rendezvous port, Gloo on ephemeral ports), the primary and the other
// workers the workers (Gloo dials both ways; in a job of 3 or more ranks
// the workers dial each other). Returns notes.
function checkWorker(objs, flags, worker, primary, workers) {
  const { container, workload } = worker;
  if (setting(objs, container, "TRANSFERD_FOLLOW")) {
    throw new Problem(`${name(workload)} sets both TRANSFERD_COORDINATOR and TRANSFERD_FOLLOW: the server refuses (a replica serves, a worker trains)`);
  }
  const { tokenFile, secret } = clientToken(objs, worker, "TRANSFERD_WORKER_TOKEN_FILE", "coordinator");
  const address = String(setting(objs, container, "TRANSFERD_COORDINATOR"));
  const { svc, cport } = primaryBehind(objs, worker, primary, "TRANSFERD_COORDINATOR", address, "the workers");
  if (!admitted(objs, primary, worker, (rule) => ruleAdmitsPort(rule, cport.containerPort, cport.name))) {
    throw new Problem(`${name(workload)} cannot reach the coordinator: no NetworkPolicy of ${name(primary.workload)} admits its pods on port ${cport.containerPort}`);
  }
  const rport = Number(setting(objs, primary.container, "TRANSFERD_RENDEZVOUS_PORT") ?? RENDEZVOUS_PORT);
  if (!admitted(objs, primary, worker, (rule) => ruleAdmitsPort(rule, rport))) {
    throw new Problem(`${name(workload)} cannot reach the coordinator's TCPStore: no NetworkPolicy of ${name(primary.workload)} admits its pods on the rendezvous port ${rport}`);
  }
  const gloo = "Gloo connects the ranks on ephemeral ports, in both directions";
  if (!admitted(objs, primary, worker, ruleAdmitsAllTcp)) {
    throw new Problem(`${name(workload)}: no NetworkPolicy of ${name(primary.workload)} admits its pods on all TCP ports: ${gloo}`);
  }
  if (!admitted(objs, worker, primary, ruleAdmitsAllTcp)) {
    throw new Problem(`${name(workload)}: no NetworkPolicy of its pods admits the coordinator ${name(primary.workload)} on all TCP ports: ${gloo}`);
  }
  for (const other of workers) {
    if (!admitted(objs, worker, other, ruleAdmitsAllTcp)) {
      throw new Problem(`${name(workload)}: no NetworkPolicy of its pods admits the workers of ${name(other.workload)} on all TCP ports: ${gloo}, and in a job of 3 ranks or more the workers dial each other`);
    }
  }
  return [`joins ${address} (${name(svc)} -> ${name(primary.workload)} port ${cport.containerPort}, admitted) with a token from Secret ${secret.secretName} (${tokenFile}); all TCP admitted from the workers to the coordinator (TCPStore ${rport}, Gloo), from the coordinator and the workers to the workers`];
}

// With TLS on the primary, a replica reaches it over TLS and checks its
// certificate: against the CA that issued it (TRANSFERD_FOLLOW_CA, key
// ca.crt of a Secret a Certificate from the primary's issuer writes), for a
// name the certificate carries. And it never holds the primary's private
// key, with which it could pose as the primary. Returns notes.
function checkFollowerTls(objs, { pod, container, workload }, primary, address) {
  const ca = setting(objs, container, "TRANSFERD_FOLLOW_CA");
  if (!ca) {
    throw new Problem(`${name(workload)}: TRANSFERD_FOLLOW_CA is not set: the primary serves TLS only, and the replicas must check its certificate against the CA that issued it`);
  }
  const { mount, secret } = secretHolding(pod, container, ca, `${name(workload)}: TRANSFERD_FOLLOW_CA`);
  const key = secretKey(mount, secret, ca);
  if (key !== "ca.crt") {
    throw new Problem(`${name(workload)}: TRANSFERD_FOLLOW_CA ${ca} is key ${key ?? "(none)"} of Secret ${secret.secretName}, not its CA certificate ca.crt`);
  }
  const mine = serverTls(objs, primary);
  const issuer = issuerOf(mine.cert);
  const caCert = certificateWriting(objs, secret.secretName);
  if (!caCert || issuerOf(caCert) !== issuer) {
    throw new Problem(`${name(workload)}: TRANSFERD_FOLLOW_CA is ca.crt of Secret ${secret.secretName}, which no Certificate from the primary's issuer ${issuer} writes: not the CA of the primary's certificate`);
  }

  const serverName = setting(objs, container, "TRANSFERD_FOLLOW_SERVER_NAME") ||
    address.slice(0, address.lastIndexOf(":"));
  const dnsNames = mine.cert.spec.dnsNames ?? [];
  if (!dnsNames.includes(serverName)) {
    throw new Problem(`${name(workload)} checks the primary's certificate for the name ${serverName} (TRANSFERD_FOLLOW_SERVER_NAME, or the host of TRANSFERD_FOLLOW), which ${name(mine.cert)} does not carry (dnsNames: ${dnsNames.join(", ") || "none"})`);
  }

  // The primary's key: the key of its Secret that its TRANSFERD_TLS_KEY is.
  const primaryKey = serverTls(objs, primary).keyFile;
  const pm = secretHolding(primary.pod, primary.container, primaryKey, "TRANSFERD_TLS_KEY");
  const keyName = secretKey(pm.mount, pm.secret, primaryKey);
  for (const v of pod.spec.volumes ?? []) {
    const sources = v.secret
      ? [{ secretName: v.secret.secretName, items: v.secret.items }]
      : (v.projected?.sources ?? []).filter((src) => src.secret).map((src) => ({ secretName: src.secret.name, items: src.secret.items }));
    for (const src of sources) {
      if (src.secretName !== pm.secret.secretName) continue;
      if (!src.items || src.items.some((i) => i.key === keyName)) {
        throw new Problem(`${name(workload)}: volume ${v.name} holds the primary's private key (${keyName} of Secret ${src.secretName}): a replica could pose as the primary; mount only its ca.crt (items)`);
      }
    }
  }
  return [`checks the primary's certificate (name ${serverName}) against ca.crt of Secret ${secret.secretName} (issuer ${issuer}), without the primary's key`];
}

function check(objs, flags) {
  const servers = workloads(objs);
  const primary = servers.find((w) => w.workload === primaryOf(objs).workload);
  if (setting(objs, primary.container, "TRANSFERD_FOLLOW")) {
    throw new Problem(`the primary ${name(primary.workload)} sets TRANSFERD_FOLLOW: it would be a read-only replica`);
  }
  const followers = servers.filter((w) => setting(objs, w.container, "TRANSFERD_FOLLOW"));
  if (flags.includes("--serving") && followers.length !== 1) {
    throw new Problem(`expected one workload of serving replicas (TRANSFERD_FOLLOW set), found ${followers.length}`);
  }
  const workers = servers.filter((w) => setting(objs, w.container, "TRANSFERD_COORDINATOR"));
  if (flags.includes("--workers") && workers.length !== 1) {
    throw new Problem(`expected one workload of data-parallel workers (TRANSFERD_COORDINATOR set), found ${workers.length}`);
  }
  const notes = [];
  const several = servers.length > 1;
  for (const w of [primary, ...servers.filter((x) => x !== primary)]) {
    let mine;
    try {
      mine = checkServer(objs, flags, w, { followers, primary, workers });
      if (followers.includes(w)) mine = mine.concat(checkFollower(objs, flags, w, primary));
      if (workers.includes(w)) mine = mine.concat(checkWorker(objs, flags, w, primary, workers));
    } catch (e) {
      // Name the server whose check failed, where there are several.
      if (!(e instanceof Problem) || !several || e.message.includes(name(w.workload))) throw e;
      throw new Problem(`${name(w.workload)}: ${e.message}`);
    }
    notes.push(several ? `${name(w.workload)}: ${mine.join(", ")}` : mine.join("; "));
  }
  console.log(notes.join("; "));
}

const flags = process.argv.slice(2);
if (flags.some((f) => !["--tls", "--monitoring", "--serving", "--workers"].includes(f))) {
  console.error("usage: security.mjs [--tls] [--monitoring] [--serving] [--workers]  < rendered-manifests.yaml");
  process.exit(2);
}
try {
  check(load(), flags);
} catch (e) {
  if (!(e instanceof Problem)) throw e;
  console.error(`security.mjs: ${e.message}`);
  process.exit(1);
}
