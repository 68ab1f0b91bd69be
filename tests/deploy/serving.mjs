#!/usr/bin/env node
// Checks of the serving replicas in rendered manifests (the output of
// `kubectl kustomize deploy/k8s/overlays/serving` or
// `deploy/k8s/overlays/serving-tls`, or any render with
// deploy/k8s/components/serving), for validate.sh: how the Deployment of
// replicas, its Service, PodDisruptionBudget and HorizontalPodAutoscaler fit
// together and stay apart from the primary, which no schema can see.
//
//   node serving.mjs  < rendered-manifests.yaml
//
//   - one Deployment whose container sets TRANSFERD_FOLLOW (the replicas),
//     one StatefulSet that does not (the primary; data-parallel workers,
//     TRANSFERD_COORDINATOR set, are neither); neither workload's
//     selector selects the other's pods, and the Deployment leaves
//     spec.replicas to the autoscaler;
//   - exactly one Service selects the replicas, and it selects no primary
//     pod, with a port `grpc` to the container port grpc;
//   - readiness asks the health of an alias (grpc.service aliases/NAME),
//     startup and liveness the whole server (service ""), each on a port
//     the container declares (gRPC's, or with TLS the health-only port);
//   - the data dir (TRANSFERD_DATA_DIR) is an emptyDir: a cache;
//   - terminationGracePeriodSeconds is longer than TRANSFERD_SHUTDOWN_GRACE;
//   - one HorizontalPodAutoscaler scales the Deployment, from at least 2
//     replicas; on CPU utilisation the container has a CPU request;
//   - one PodDisruptionBudget selects the replicas (and not the primary)
//     and lets one of minReplicas go;
//   - the replicas prefer distinct nodes (anti-affinity or a spread on
//     kubernetes.io/hostname).
// Security (the token sent to the primary, the NetworkPolicies) is
// security.mjs's. Prints what it checked; on a problem prints it on stderr
// and exits 1.
import { Problem, load, name, ofKind, selects, setting, workloads } from "./manifests.mjs";

const HOSTNAME = "kubernetes.io/hostname";

function check(objs) {
  const notes = [];
  const servers = workloads(objs);
  const followers = servers.filter((w) => setting(objs, w.container, "TRANSFERD_FOLLOW"));
  const primaries = servers.filter((w) => !followers.includes(w) && !setting(objs, w.container, "TRANSFERD_COORDINATOR"));
  if (followers.length !== 1 || followers[0].workload.kind !== "Deployment") {
    throw new Problem(`expected one Deployment of serving replicas (TRANSFERD_FOLLOW set), found ${followers.map((w) => name(w.workload)).join(", ") || "none"}`);
  }
  if (primaries.length !== 1 || primaries[0].workload.kind !== "StatefulSet") {
    throw new Problem(`expected one primary StatefulSet (no TRANSFERD_FOLLOW), found ${primaries.map((w) => name(w.workload)).join(", ") || "none"}`);
  }
  const [replicas] = followers;
  const [primary] = primaries;
  const dep = replicas.workload;
  const labels = replicas.pod.metadata.labels;
  const primaryLabels = primary.pod.metadata.labels;

  // Apart from the primary.
  if (!selects(dep.spec.selector, labels)) throw new Problem(`${name(dep)}: spec.selector does not select its own pod template`);
  if (selects(dep.spec.selector, primaryLabels)) throw new Problem(`${name(dep)}: spec.selector also selects the pods of ${name(primary.workload)}`);
  if (selects(primary.workload.spec.selector, labels)) {
    throw new Problem(`${name(primary.workload)}: spec.selector also selects the pods of ${name(dep)}`);
  }
  if (dep.spec.replicas !== undefined) {
    throw new Problem(`${name(dep)}: spec.replicas is set (${dep.spec.replicas}): each kubectl apply would reset what the autoscaler chose`);
  }
  notes.push(`${name(dep)} follows ${setting(objs, replicas.container, "TRANSFERD_FOLLOW")}, pods apart from ${name(primary.workload)}'s`);

  // The Service for Predict.
  const svcSelects = (s, l) => selects({ matchLabels: s.spec.selector }, l);
  const services = ofKind(objs, "Service").filter((s) => svcSelects(s, labels));
  if (services.length !== 1) {
    throw new Problem(`expected one Service selecting the replicas, found ${services.length}${services.length ? ` (${services.map(name).join(", ")})` : ""}`);
  }
  const [svc] = services;
  if (svcSelects(svc, primaryLabels)) throw new Problem(`${name(svc)} also selects the primary's pods`);
  const grpc = svc.spec.ports?.find((p) => p.name === "grpc");
  const cgrpc = replicas.container.ports?.find((p) => p.name === "grpc");
  if (!grpc || !cgrpc || (grpc.targetPort !== "grpc" && grpc.targetPort !== cgrpc.containerPort)) {
    throw new Problem(`${name(svc)}: no port grpc to the replicas' container port grpc`);
  }
  notes.push(`${name(svc)} port grpc ${grpc.port} selects only the replicas`);

  // Probes.
  const { readinessProbe, startupProbe, livenessProbe } = replicas.container;
  const alias = /^aliases\/(.+)$/.exec(readinessProbe?.grpc?.service ?? "");
  if (!alias) {
    throw new Problem(`${name(dep)}: readinessProbe asks ${JSON.stringify(readinessProbe?.grpc?.service ?? "")}, not the health of an alias (grpc.service aliases/NAME): a replica would take traffic before its model is warm`);
  }
  for (const [p, probe] of [["startupProbe", startupProbe], ["livenessProbe", livenessProbe]]) {
    if (!probe?.grpc) throw new Problem(`${name(dep)}: ${p} is not a gRPC probe`);
    if (probe.grpc.service) {
      throw new Problem(`${name(dep)}: ${p} asks ${JSON.stringify(probe.grpc.service)}, not the whole server (""): a replica would be restarted for an alias`);
    }
  }
  // Each probe asks a port the container declares: gRPC's, or with TLS the
  // plaintext health-only port (TRANSFERD_HEALTH_LISTEN, container port
  // `health`), which answers the per-alias statuses as gRPC's does.
  const cports = replicas.container.ports ?? [];
  for (const [p, probe] of [["startupProbe", startupProbe], ["readinessProbe", readinessProbe], ["livenessProbe", livenessProbe]]) {
    const port = probe.grpc.port;
    if (!cports.some((c) => c.containerPort === port || c.name === port)) {
      throw new Problem(`${name(dep)}: ${p} asks port ${port}, which is no container port of the replicas (${cports.map((c) => `${c.name} ${c.containerPort}`).join(", ")})`);
    }
  }
  notes.push(`ready when alias ${alias[1]} is warm (port ${readinessProbe.grpc.port})`);

  // The cache and the shutdown.
  const dataDir = setting(objs, replicas.container, "TRANSFERD_DATA_DIR");
  const mount = (replicas.container.volumeMounts ?? []).find((m) => m.mountPath.replace(/\/$/, "") === String(dataDir ?? "").replace(/\/$/, ""));
  const volume = (replicas.pod.spec.volumes ?? []).find((v) => v.name === mount?.name);
  if (!volume?.emptyDir) {
    throw new Problem(`${name(dep)}: the data dir ${dataDir} is not an emptyDir volume (a replica's data dir is a cache)`);
  }
  const grace = Number(setting(objs, replicas.container, "TRANSFERD_SHUTDOWN_GRACE") ?? 25);
  const period = replicas.pod.spec.terminationGracePeriodSeconds ?? 30;
  if (!(period > grace)) {
    throw new Problem(`${name(dep)}: terminationGracePeriodSeconds ${period} is not longer than TRANSFERD_SHUTDOWN_GRACE ${grace}`);
  }
  notes.push(`data dir ${dataDir} on emptyDir ${volume.name}, grace ${grace} s < ${period} s`);

  // The autoscaler.
  const hpas = ofKind(objs, "HorizontalPodAutoscaler").filter(
    (h) => h.spec.scaleTargetRef?.kind === "Deployment" && h.spec.scaleTargetRef?.name === dep.metadata.name &&
      h.spec.scaleTargetRef?.apiVersion === "apps/v1",
  );
  if (hpas.length !== 1) throw new Problem(`expected one HorizontalPodAutoscaler scaling ${name(dep)}, found ${hpas.length}`);
  const [hpa] = hpas;
  const min = hpa.spec.minReplicas ?? 1;
  if (min < 2) throw new Problem(`${name(hpa)}: minReplicas ${min}: one replica leaves nothing serving through a drain or a rollout`);
  const cpu = (hpa.spec.metrics ?? []).find((m) => m.type === "Resource" && m.resource?.name === "cpu");
  if (cpu?.resource.target?.type === "Utilization" && !replicas.container.resources?.requests?.cpu) {
    throw new Problem(`${name(hpa)} scales on CPU utilisation, but ${name(dep)} requests no CPU (utilisation is a share of the request)`);
  }
  const metric = cpu ? `cpu ${cpu.resource.target.averageUtilization}%` : (hpa.spec.metrics ?? []).map((m) => m.type).join(", ");
  notes.push(`${name(hpa)} ${min}-${hpa.spec.maxReplicas} on ${metric}`);

  // Disruptions.
  const pdbs = ofKind(objs, "PodDisruptionBudget").filter((p) => selects(p.spec.selector, labels));
  if (pdbs.length !== 1) throw new Problem(`expected one PodDisruptionBudget selecting the replicas, found ${pdbs.length}`);
  const [pdb] = pdbs;
  if (selects(pdb.spec.selector, primaryLabels)) throw new Problem(`${name(pdb)} also selects the primary's pods`);
  const { maxUnavailable, minAvailable } = pdb.spec;
  if ((Number.isInteger(maxUnavailable) && maxUnavailable < 1) || (Number.isInteger(minAvailable) && minAvailable >= min)) {
    throw new Problem(`${name(pdb)} (maxUnavailable ${maxUnavailable}, minAvailable ${minAvailable}) lets no replica of ${min} go: node drains would block`);
  }
  notes.push(`${name(pdb)} ${maxUnavailable !== undefined ? `maxUnavailable ${maxUnavailable}` : `minAvailable ${minAvailable}`}`);

  // Spread over nodes.
  const spec = replicas.pod.spec;
  const anti = [
    ...(spec.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((t) => t.podAffinityTerm),
    ...(spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? []),
  ].some((t) => t?.topologyKey === HOSTNAME && selects(t.labelSelector, labels));
  const spread = (spec.topologySpreadConstraints ?? []).some((c) => c.topologyKey === HOSTNAME && selects(c.labelSelector, labels));
  if (!anti && !spread) throw new Problem(`${name(dep)}: nothing spreads the replicas over nodes (anti-affinity or a topology spread on ${HOSTNAME})`);
  notes.push(`spread over nodes (${anti ? "anti-affinity" : "topology spread"})`);

  console.log(notes.join("; "));
}

try {
  check(load());
} catch (e) {
  if (!(e instanceof Problem)) throw e;
  console.error(`serving.mjs: ${e.message}`);
  process.exit(1);
}
