#!/usr/bin/env node
// Checks of the data-parallel training workers in rendered manifests (the
// output of `kubectl kustomize deploy/k8s/overlays/distributed`, or any
// render with deploy/k8s/components/workers), for validate.sh: how the
// StatefulSet of workers, its headless Service and the primary (their
// coordinator) fit together and stay apart, which no schema can see.
//
//   node workers.mjs  < rendered-manifests.yaml
//
//   - one StatefulSet whose container sets TRANSFERD_COORDINATOR (the
//     workers), one primary StatefulSet that sets neither it nor
//     TRANSFERD_FOLLOW; neither workload's selector selects the other's
//     pods; the workers run the primary's image;
//   - the workers' serviceName is a headless Service (clusterIP None) that
//     selects them and not the primary (per-pod DNS names);
//     podManagementPolicy Parallel; spec.replicas set (at least 1);
//   - each worker pod has its own name and address: TRANSFERD_WORKER_NAME
//     unset (the host name, the pod's name) or the pod's metadata.name, and
//     TRANSFERD_RENDEZVOUS_ADDRESS unset or the pod's status.podIP, never
//     one literal value for every pod, never loopback;
//   - the coordinator's TRANSFERD_RENDEZVOUS_ADDRESS is set and not
//     loopback (the server's default 127.0.0.1 reaches no worker), and its
//     TRANSFERD_RENDEZVOUS_PORT (29500 by default) is a container port of
//     its;
//   - the workers' data dir (TRANSFERD_DATA_DIR) is a volumeClaimTemplate:
//     each worker its own persistent cache of fetched dataset files;
//   - one accelerator per worker pod: a CUDA TRANSFERD_DEVICE comes with
//     an nvidia.com/gpu limit, and such a limit is 1;
//   - the three probes are gRPC, ask the whole server (service "") on a
//     port the container declares; terminationGracePeriodSeconds is longer
//     than TRANSFERD_SHUTDOWN_GRACE; the workers prefer distinct nodes.
// Security (the token sent to the coordinator, TRANSFERD_COORDINATOR's
// Service, the NetworkPolicies) is security.mjs's. Prints what it checked;
// on a problem prints it on stderr and exits 1.
import { Problem, load, name, ofKind, primaryOf, selects, setting, workloads } from "./manifests.mjs";

const HOSTNAME = "kubernetes.io/hostname";
const RENDEZVOUS_PORT = 29500;
const LOOPBACK = /^(127\.|localhost$|::1$|\[::1\]$|0\.0\.0\.0$|::$|\[::\]$)/;

function check(objs) {
  const notes = [];
  const servers = workloads(objs);
  const workers = servers.filter((w) => setting(objs, w.container, "TRANSFERD_COORDINATOR"));
  if (workers.length !== 1 || workers[0].workload.kind !== "StatefulSet") {
    throw new Problem(`expected one StatefulSet of workers (TRANSFERD_COORDINATOR set), found ${workers.map((w) => name(w.workload)).join(", ") || "none"}`);
  }
  const [worker] = workers;
  const primary = servers.find((w) => w.workload === primaryOf(objs).workload);
  if (setting(objs, primary.container, "TRANSFERD_FOLLOW")) {
    throw new Problem(`the coordinator ${name(primary.workload)} sets TRANSFERD_FOLLOW: a read-only replica runs no jobs`);
  }
  const sts = worker.workload;
  const labels = worker.pod.metadata.labels;
  const primaryLabels = primary.pod.metadata.labels;

  // Apart from the primary, on its image.
  if (!selects(sts.spec.selector, labels)) throw new Problem(`${name(sts)}: spec.selector does not select its own pod template`);
  if (selects(sts.spec.selector, primaryLabels)) throw new Problem(`${name(sts)}: spec.selector also selects the pods of ${name(primary.workload)}`);
  if (selects(primary.workload.spec.selector, labels)) {
    throw new Problem(`${name(primary.workload)}: spec.selector also selects the pods of ${name(sts)}`);
  }
  if (worker.container.image !== primary.container.image) {
    throw new Problem(`${name(sts)} runs image ${worker.container.image}, the coordinator ${primary.container.image}: the ranks of a job must run one build`);
  }
  notes.push(`${name(sts)} joins ${setting(objs, worker.container, "TRANSFERD_COORDINATOR")} on image ${worker.container.image}, pods apart from ${name(primary.workload)}'s`);

  // The headless Service, the pod management, the count.
  const svc = ofKind(objs, "Service").find((s) => s.metadata.name === sts.spec.serviceName);
  if (!svc) throw new Problem(`${name(sts)}: serviceName ${sts.spec.serviceName} is no Service of the manifests`);
  if (svc.spec.clusterIP !== "None") {
    throw new Problem(`${name(sts)}: its serviceName ${name(svc)} is not headless (clusterIP: None): the worker pods get no DNS names of their own`);
  }
  const svcSelects = (l) => selects({ matchLabels: svc.spec.selector }, l);
  if (!svcSelects(labels)) throw new Problem(`${name(svc)} does not select the workers`);
  if (svcSelects(primaryLabels)) throw new Problem(`${name(svc)} also selects the coordinator's pods`);
  if (sts.spec.podManagementPolicy !== "Parallel") {
    throw new Problem(`${name(sts)}: podManagementPolicy is ${sts.spec.podManagementPolicy ?? "OrderedReady (the default)"}, not Parallel: the workers are alike and need not start one after the other`);
  }
  if (!(Number.isInteger(sts.spec.replicas) && sts.spec.replicas >= 1)) {
    throw new Problem(`${name(sts)}: spec.replicas is ${sts.spec.replicas}, not a count of at least 1`);
  }
  notes.push(`headless ${name(svc)}, ${sts.spec.replicas} workers started in parallel (jobs of up to ${sts.spec.replicas + 1} ranks)`);

  // Each worker pod its own name and address.
  const workerName = setting(objs, worker.container, "TRANSFERD_WORKER_NAME");
  if (workerName !== undefined && workerName !== "fieldRef:metadata.name") {
    throw new Problem(`${name(sts)}: TRANSFERD_WORKER_NAME is ${JSON.stringify(workerName)}: every worker pod would join under that one name (leave it unset, or the pod's metadata.name)`);
  }
  const own = setting(objs, worker.container, "TRANSFERD_RENDEZVOUS_ADDRESS");
  if (own !== undefined && own !== "fieldRef:status.podIP") {
    throw new Problem(`${name(sts)}: TRANSFERD_RENDEZVOUS_ADDRESS is ${JSON.stringify(own)}: every worker pod would advertise that one address for its Gloo connections (leave it unset, or the pod's status.podIP)`);
  }
  notes.push(`worker name ${workerName === undefined ? "the host name" : "the pod's name"}, Gloo address ${own === undefined ? "the host name's" : "the pod's IP"}`);

  // The coordinator's rendezvous.
  const master = setting(objs, primary.container, "TRANSFERD_RENDEZVOUS_ADDRESS");
  if (master === undefined || master === "") {
    throw new Problem(`${name(primary.workload)}: TRANSFERD_RENDEZVOUS_ADDRESS is not set: the coordinator's default 127.0.0.1 reaches no worker (they dial its TCPStore there)`);
  }
  if (LOOPBACK.test(String(master))) {
    throw new Problem(`${name(primary.workload)}: TRANSFERD_RENDEZVOUS_ADDRESS ${master} is not an address the workers can reach`);
  }
  const rport = Number(setting(objs, primary.container, "TRANSFERD_RENDEZVOUS_PORT") ?? RENDEZVOUS_PORT);
  if (!(primary.container.ports ?? []).some((p) => p.containerPort === rport && (p.protocol ?? "TCP") === "TCP")) {
    throw new Problem(`${name(primary.workload)}: the rendezvous port ${rport} (TRANSFERD_RENDEZVOUS_PORT) is no container port of the coordinator`);
  }
  notes.push(`coordinator's TCPStore at ${master === "fieldRef:status.podIP" ? "its pod IP" : master}:${rport}`);

  // The data dir: a PVC per worker.
  const dataDir = setting(objs, worker.container, "TRANSFERD_DATA_DIR");
  const mount = (worker.container.volumeMounts ?? []).find((m) => m.mountPath.replace(/\/$/, "") === String(dataDir ?? "").replace(/\/$/, ""));
  if (!mount) throw new Problem(`${name(sts)}: the data dir ${dataDir} is in no volume mount`);
  const podVolume = (worker.pod.spec.volumes ?? []).find((v) => v.name === mount.name);
  const claim = (sts.spec.volumeClaimTemplates ?? []).find((t) => t.metadata?.name === mount.name);
  if (podVolume || !claim) {
    throw new Problem(`${name(sts)}: the data dir ${dataDir} (volume ${mount.name}) is not a volumeClaimTemplate: each worker needs a persistent data dir of its own (its cache of fetched dataset files)`);
  }
  notes.push(`data dir ${dataDir} on volumeClaimTemplate ${claim.metadata.name} (${claim.spec.resources?.requests?.storage})`);

  // One accelerator per worker pod.
  const device = String(setting(objs, worker.container, "TRANSFERD_DEVICE") ?? "auto");
  const gpus = worker.container.resources?.limits?.["nvidia.com/gpu"];
  if (device.startsWith("cuda") && gpus === undefined) {
    throw new Problem(`${name(sts)}: TRANSFERD_DEVICE is ${device}, but the workers have no nvidia.com/gpu limit`);
  }
  if (gpus !== undefined && Number(gpus) !== 1) {
    throw new Problem(`${name(sts)}: nvidia.com/gpu limit ${gpus}: a worker uses one accelerator (cuda:0), give each pod one`);
  }
  notes.push(`device ${device}${gpus !== undefined ? ", one GPU per pod" : ""}`);

  // Probes, shutdown.
  const cports = worker.container.ports ?? [];
  for (const p of ["startupProbe", "readinessProbe", "livenessProbe"]) {
    const probe = worker.container[p];
    if (!probe?.grpc) throw new Problem(`${name(sts)}: ${p} is not a gRPC probe`);
    if (probe.grpc.service) {
      throw new Problem(`${name(sts)}: ${p} asks ${JSON.stringify(probe.grpc.service)}, not the whole server ("")`);
    }
    if (!cports.some((c) => c.containerPort === probe.grpc.port || c.name === probe.grpc.port)) {
      throw new Problem(`${name(sts)}: ${p} asks port ${probe.grpc.port}, which is no container port of the workers`);
    }
  }
  const grace = Number(setting(objs, worker.container, "TRANSFERD_SHUTDOWN_GRACE") ?? 25);
  const period = worker.pod.spec.terminationGracePeriodSeconds ?? 30;
  if (!(period > grace)) {
    throw new Problem(`${name(sts)}: terminationGracePeriodSeconds ${period} is not longer than TRANSFERD_SHUTDOWN_GRACE ${grace}`);
  }
  notes.push(`gRPC probes on the whole server, grace ${grace} s < ${period} s`);

  // Spread over nodes.
  const spec = worker.pod.spec;
  const anti = [
    ...(spec.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((t) => t.podAffinityTerm),
    ...(spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? []),
  ].some((t) => t?.topologyKey === HOSTNAME && selects(t.labelSelector, labels));
  const spread = (spec.topologySpreadConstraints ?? []).some((c) => c.topologyKey === HOSTNAME && selects(c.labelSelector, labels));
  if (!anti && !spread) throw new Problem(`${name(sts)}: nothing spreads the workers over nodes (anti-affinity or a topology spread on ${HOSTNAME})`);
  notes.push(`spread over nodes (${anti ? "anti-affinity" : "topology spread"})`);

  console.log(notes.join("; "));
}

try {
  check(load());
} catch (e) {
  if (!(e instanceof Problem)) throw e;
  console.error(`workers.mjs: ${e.message}`);
  process.exit(1);
}
