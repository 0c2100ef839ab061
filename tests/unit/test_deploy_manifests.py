"""The deployment artefacts of deploy/, validated offline (no cluster, no container daemon).

* Kubernetes (deploy/k8s, base and overlays/secure): rendered by `kubectl kustomize` when kubectl is
  on PATH, and always by the small renderer below (the subset of kustomize these files use; it
  refuses any other field, and where kubectl exists it must render the same objects).  Every
  rendered object is validated against the Kubernetes JSON schemas of K8S_VERSION
  (kubernetes-validate, strict: unknown fields fail), then cross-checked: ports of probes,
  Services, scrape annotations and endpoints agree with the settings; the fan-outs' grace period
  covers the drain; writer and syncer share one volume and one PID namespace; security contexts;
  the CURVE keys each container mounts are those its actor loads.
* compose.yaml: the compose-spec schema (check-jsonschema's vendored copy), then the same kind of
  cross-checks.
* Containerfile and entrypoint.sh: their settings, ports, user, volume, health check.
Every ZWATCH_* name anywhere in deploy/ (k8s, compose, container) must be a declared setting.
"""
from __future__ import annotations

import base64
import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from zwatch import settings
from zwatch.actors import security

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
ENTRYPOINT = DEPLOY / "container" / "entrypoint.sh"
K8S_VERSION = "1.30.0"
IMAGE = "zwatch:0.1.0"
ROLES = ("writer", "syncer", "fanout")
METRICS_PORT = {role: f"ZWATCH_{role.upper()}_METRICS_PORT" for role in ROLES}
BINDS = {"writer": ("ZWATCH_WRITER_ENDPOINT", "ZWATCH_PUB_ENDPOINT"), "syncer": ("ZWATCH_SYNCER_ENDPOINT",),
         "fanout": ("ZWATCH_FANOUT_ENDPOINT",)}
UPSTREAM = {"ZWATCH_WRITER_ENDPOINT": "writer", "ZWATCH_PUB_ENDPOINT": "writer", "ZWATCH_SYNCER_ENDPOINT": "syncer"}
SETTING_NAME = re.compile(r"\bZWATCH_[A-Z0-9_]+\b")
HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")
KUBECTL = shutil.which("kubectl")


# ================================================================ a small kustomize (the subset used here)
# Merge keys of Kubernetes' strategic merge patch for the lists these patches touch; others: `name`.
MERGE_KEYS = {"volumeMounts": "mountPath", "ports": "containerPort"}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator", "images",
                        "patches"}


def strategic_merge(dst: dict, patch: dict):
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            strategic_merge(dst[key], value)
        elif (isinstance(value, list) and isinstance(dst.get(key), list)
              and all(isinstance(i, dict) and MERGE_KEYS.get(key, "name") in i for i in value + dst[key])):
            merge_key = MERGE_KEYS.get(key, "name")
            added = []
            for item in value:
                same = [d for d in dst[key] if d[merge_key] == item[merge_key]]
                if same:
                    strategic_merge(same[0], item)
                else:
                    added.append(copy.deepcopy(item))
            dst[key] = added + dst[key]          # kustomize puts a patch's new items first
        else:
            dst[key] = copy.deepcopy(value)


def read_env_file(path: Path) -> dict[str, str]:
    data = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path}: not NAME=VALUE: {line!r}"
            data[name] = value
    return data


def render_python(kdir: Path) -> list[dict]:
    """kustomize's result for the fields in KUSTOMIZATION_FIELDS (generated names without the hash)."""
    k = yaml.safe_load((kdir / "kustomization.yaml").read_text())
    assert set(k) <= KUSTOMIZATION_FIELDS, (f"{kdir}/kustomization.yaml uses {set(k) - KUSTOMIZATION_FIELDS}, "
                                            "which this renderer does not do: teach it, or keep to the subset")
    objs: list[dict] = []
    for res in k.get("resources", []):
        path = kdir / res
        objs += render_python(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]

    def named(kind, name):
        return [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]

    for gen in k.get("configMapGenerator", []):
        assert set(gen) <= {"name", "envs", "literals", "behavior"}, gen
        data = {}
        for env in gen.get("envs", []):
            data.update(read_env_file(kdir / env))
        data.update(lit.split("=", 1) for lit in gen.get("literals", []))
        if gen.get("behavior", "create") == "merge":
            (target,) = named("ConfigMap", gen["name"])
            target["data"].update(data)
        else:
            objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for gen in k.get("secretGenerator", []):
        assert set(gen) <= {"name", "files"}, gen
        data = {}
        for spec in gen.get("files", []):
            key, _, path = spec.rpartition("=")
            data[key or Path(path).name] = base64.b64encode((kdir / path).read_bytes()).decode()
        objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]}, "type": "Opaque",
                     "data": data})
    for patch in k.get("patches", []):
        assert set(patch) == {"path"}, patch
        for p in yaml.safe_load_all((kdir / patch["path"]).read_text()):
            (target,) = named(p["kind"], p["metadata"]["name"])
            strategic_merge(target, p)
    for image in k.get("images", []):
        for pod in pod_specs(objs):
            for c in pod["containers"] + pod.get("initContainers", []):
                if c["image"].split(":")[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objs


def render_kubectl(kdir: Path) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(kdir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"kubectl kustomize {kdir}: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def without_hashes(objs: list[dict]) -> list[dict]:
    """kubectl's output with the generated ConfigMaps' and Secrets' hash suffixes taken off (names
    and every reference to them), sorted like the Python renderer's."""
    generated = {o["metadata"]["name"] for o in objs if o["kind"] in ("ConfigMap", "Secret")}

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return HASH_SUFFIX.sub("", x) if isinstance(x, str) and x in generated else x

    return strip(objs)


def key(o):
    return o["kind"], o["metadata"]["name"]


# ================================================================ the rendered targets
@pytest.fixture(scope="module")
def k8s_copy(tmp_path_factory) -> Path:
    """deploy/k8s copied with fresh keys in overlays/secure/keys (as `zwatch keygen --cluster`
    writes them): the secure overlay's secretGenerator reads them, and none is committed."""
    dst = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, dst, ignore=shutil.ignore_patterns("keys"))
    out = subprocess.run([sys.executable, "-m", "zwatch.cli", "keygen", "--cluster",
                          str(dst / "overlays" / "secure" / "keys"), "--client", "root"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return dst


TARGETS = {"base": Path("."), "secure": Path("overlays/secure")}
_cache: dict = {}


@pytest.fixture(params=["kubectl", "python"])
def how(request):
    if request.param == "kubectl" and KUBECTL is None:
        pytest.skip("kubectl is not on PATH: the render by kustomize itself is not checked here; "
                    "the same files are checked through the Python renderer ([python] tests)")
    return request.param


@pytest.fixture(params=list(TARGETS))
def rendered(request, how, k8s_copy) -> list[dict]:
    cache_key = (request.param, how)
    if cache_key not in _cache:
        kdir = k8s_copy / TARGETS[request.param]
        _cache[cache_key] = render_kubectl(kdir) if how == "kubectl" else render_python(kdir)
    return copy.deepcopy(_cache[cache_key])


# ================================================================ helpers over rendered objects
def pod_templates(objs):
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def pod_specs(objs):
    return [o["spec"]["template"]["spec"] for o in pod_templates(objs)]


def role(container) -> str | None:
    args = container.get("args") or []
    return args[0] if args and args[0] in ROLES else None


def container_env(objs, container) -> dict[str, str]:
    """What the container's process sees: envFrom ConfigMaps, then env (later wins), $(VAR) expanded."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == src["configMapRef"]["name"]]
        env.update(cm["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
        else:
            env[item["name"]] = "<from " + ",".join(item["valueFrom"]) + ">"
    return env


def setting(env: dict, name: str):
    return settings.get(name, env)


def endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.removeprefix("tcp://").rpartition(":")
    return host, int(port)


def port_number(container, port) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port] or [None]
    assert number is not None, f"container {container['name']}: no port named {port!r}"
    return number


def selected(objs, selector: dict) -> list[dict]:
    return [o for o in pod_templates(objs)
            if selector.items() <= o["spec"]["template"]["metadata"].get("labels", {}).items()]


def the_store(objs):
    (sts,) = [o for o in pod_templates(objs) if {role(c) for c in o["spec"]["template"]["spec"]["containers"]} >= {"writer"}]
    return sts


def the_fanouts(objs):
    (dep,) = [o for o in pod_templates(objs) if [role(c) for c in o["spec"]["template"]["spec"]["containers"]] == ["fanout"]]
    return dep


# ================================================================ Kubernetes
def test_every_rendered_object_validates_against_the_kubernetes_schemas(rendered):
    kinds = sorted(key(o) for o in rendered)
    print(len(rendered), "objects:", kinds)
    expected = {"ConfigMap", "Service", "StatefulSet", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    assert expected <= {k for k, _ in kinds}
    errors = []
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{key(obj)}: {exc.message} at {'/'.join(map(str, exc.path))}")
    assert not errors, "\n".join(errors)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH: nothing to compare the Python renderer with")
@pytest.mark.parametrize("target", list(TARGETS))
def test_the_python_renderer_renders_what_kubectl_kustomize_does(target, k8s_copy):
    kdir = k8s_copy / TARGETS[target]
    assert decoded(sorted(without_hashes(render_kubectl(kdir)), key=key)) == decoded(sorted(render_python(kdir), key=key))


def decoded(objs: list[dict]) -> list[dict]:
    """Secrets' data decoded (kubectl wraps its base64 lines)."""
    for o in objs:
        if o["kind"] == "Secret":
            o["data"] = {k: base64.b64decode(v) for k, v in o["data"].items()}
    return objs


def test_settings_in_the_manifests_are_declared_and_valid(rendered):
    seen = set()
    for spec in pod_specs(rendered):
        for c in spec["containers"]:
            for name, value in container_env(rendered, c).items():
                if name.startswith("ZWATCH_"):
                    seen.add(name)
                    assert name in settings.BY_NAME, f"{c['name']}: {name} is not a declared setting"
                    settings.BY_NAME[name].parse(value)          # SettingError when malformed
    assert {"ZWATCH_DATA_DIR", "ZWATCH_DRAIN_S", *METRICS_PORT.values()} <= seen


def test_ports_of_probes_services_annotations_and_endpoints_agree_with_the_settings(rendered):
    checked = []
    for wl in pod_templates(rendered):
        tmpl = wl["spec"]["template"]
        metrics_ports = []
        for c in tmpl["spec"]["containers"]:
            r = role(c)
            assert r, f"{c['name']}: args[0] is not a role of the entry point ({ROLES})"
            env = container_env(rendered, c)
            metrics = setting(env, METRICS_PORT[r])
            assert metrics, f"{c['name']}: {METRICS_PORT[r]} unset: no /livez, /readyz, /metrics"
            metrics_ports.append(metrics)
            assert metrics in [p["containerPort"] for p in c["ports"]], c["name"]
            for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz"), ("startupProbe", "/livez")):
                if probe in c or probe != "startupProbe":
                    get = c[probe]["httpGet"]
                    assert (get["path"], port_number(c, get["port"])) == (path, metrics), f"{c['name']} {probe}"
                    checked.append((c["name"], probe, metrics))
            assert setting(env, "ZWATCH_METRICS_HOST") in ("0.0.0.0", "::", "*"), "the kubelet probes the pod IP"
            for name in BINDS[r]:
                host, port = endpoint(setting(env, name))
                assert host in ("0.0.0.0", "*"), f"{c['name']}: {name}={setting(env, name)} is not reachable from other pods"
                assert port in [p["containerPort"] for p in c["ports"]], f"{c['name']}: {name} port not declared"
            if r == "fanout":     # what member list names: the pod's address and the client port
                advertised = setting(env, "ZWATCH_FANOUT_ADVERTISE")
                assert advertised and endpoint(advertised)[1] == endpoint(setting(env, "ZWATCH_FANOUT_ENDPOINT"))[1]
        notes = tmpl["metadata"].get("annotations", {})
        assert notes.get("prometheus.io/scrape") == "true" and notes.get("prometheus.io/path") == "/metrics", wl["metadata"]["name"]
        assert int(notes["prometheus.io/port"]) == metrics_ports[0], f"{wl['metadata']['name']}: scrape port"

    # Every Service selects exactly one workload and each of its targetPorts is a port there.
    services = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "Service"}
    for name, svc in services.items():
        (wl,) = selected(rendered, svc["spec"]["selector"])
        containers = wl["spec"]["template"]["spec"]["containers"]
        declared = {x for c in containers for q in c.get("ports", []) for x in (q["containerPort"], q.get("name"))}
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            assert target in declared, f"Service {name}: targetPort {target} is no container port"

    # The fan-outs dial a Service of the store whose port leads to the port the actor binds.
    store = the_store(rendered)
    store_containers = {role(c): c for c in store["spec"]["template"]["spec"]["containers"]}
    fanout = the_fanouts(rendered)["spec"]["template"]["spec"]["containers"][0]
    fenv = container_env(rendered, fanout)
    for name, actor in UPSTREAM.items():
        host, port = endpoint(setting(fenv, name))
        assert host in services, f"fan-out {name}={setting(fenv, name)}: no Service named {host}"
        svc = services[host]
        assert svc["spec"].get("clusterIP") != "None", f"{host}: dial a stable virtual IP, not a headless name"
        assert selected(rendered, svc["spec"]["selector"]) == [store], host
        (sport,) = [p for p in svc["spec"]["ports"] if p["port"] == port] or [None]
        assert sport, f"Service {host} has no port {port} ({name})"
        c = store_containers[actor]
        bound = endpoint(setting(container_env(rendered, c), name))[1]
        assert port_number(c, sport.get("targetPort", port)) == bound, f"{host}:{port} does not lead to {name}'s port {bound}"
        checked.append((name, host, port, bound))
    client_port = endpoint(setting(fenv, "ZWATCH_FANOUT_ENDPOINT"))[1]
    fanout_services = [s for s in services.values() if selected(rendered, s["spec"]["selector"]) == [the_fanouts(rendered)]]
    assert sorted(s["spec"].get("clusterIP", "") == "None" for s in fanout_services) == [False, True]
    for svc in fanout_services:
        assert [port_number(fanout, p.get("targetPort", p["port"])) for p in svc["spec"]["ports"]] == [client_port]
        if svc["spec"].get("clusterIP") == "None":
            assert svc["spec"].get("publishNotReadyAddresses") is False, "clients must get only ready fan-outs"
    print(checked)


def preStop_sleep_s(container) -> float:
    hook = container["lifecycle"]["preStop"]
    if "sleep" in hook:
        return float(hook["sleep"]["seconds"])
    words = hook["exec"]["command"]
    words = shlex.split(words[-1]) if words[0] in ("sh", "/bin/sh") else words
    assert words[0] in ("sleep", "/bin/sleep"), words
    return float(words[1])


def test_fanouts_grace_period_exceeds_drain_plus_prestop(rendered):
    dep = the_fanouts(rendered)
    spec = dep["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    drain_s = setting(container_env(rendered, c), "ZWATCH_DRAIN_S")
    pre = preStop_sleep_s(c)
    grace = spec["terminationGracePeriodSeconds"]
    print(f"fan-out: grace {grace} s > preStop {pre} s + drain {drain_s} s")
    assert pre >= 1, "a preStop sleep lets the Services drop the pod before SIGTERM"
    assert grace > drain_s + pre
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (pdb,) = [o for o in rendered if o["kind"] == "PodDisruptionBudget"]
    assert selected(rendered, pdb["spec"]["selector"]["matchLabels"]) == [dep]
    (hpa,) = [o for o in rendered if o["kind"] == "HorizontalPodAutoscaler"]
    assert (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) == ("Deployment", dep["metadata"]["name"])


def test_writer_and_syncer_share_one_pod_volume_and_pid_namespace(rendered):
    sts = the_store(rendered)
    assert sts["kind"] == "StatefulSet" and sts["spec"]["replicas"] == 1
    spec = sts["spec"]["template"]["spec"]
    containers = {role(c): c for c in spec["containers"]}
    assert set(containers) == {"writer", "syncer"}
    assert spec.get("shareProcessNamespace") is True, "LMDB reader locks are per pid: one PID namespace"
    mounts = set()
    for r, c in containers.items():
        data_dir = setting(container_env(rendered, c), "ZWATCH_DATA_DIR")
        assert data_dir.startswith("/"), f"{r}: ZWATCH_DATA_DIR must be absolute (on the volume): {data_dir}"
        (m,) = [m for m in c["volumeMounts"] if data_dir == m["mountPath"] or data_dir.startswith(m["mountPath"].rstrip("/") + "/")]
        mounts.add((m["name"], m["mountPath"], data_dir))
    assert len(mounts) == 1, f"writer and syncer see different data directories: {mounts}"
    (vol, _, _), = mounts
    (claim,) = [t for t in sts["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == vol]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert vol not in {v["name"] for v in spec.get("volumes", [])}, "the data volume must be the claim"


def test_security_contexts_and_image(rendered):
    for wl in pod_templates(rendered):
        spec = wl["spec"]["template"]["spec"]
        pod = spec.get("securityContext", {})
        for c in spec["containers"]:
            sc = {**pod, **c.get("securityContext", {})}
            where = f"{wl['metadata']['name']}/{c['name']}"
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, where
            assert sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False, where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            assert c["image"] == IMAGE, where
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where


def test_secure_overlay_gives_each_actor_the_keys_it_loads(how, k8s_copy, tmp_path):
    objs = render_kubectl(k8s_copy / TARGETS["secure"]) if how == "kubectl" else render_python(k8s_copy / TARGETS["secure"])
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    loaded = []
    for wl in pod_templates(objs):
        spec = wl["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            env = container_env(objs, c)
            curve_dir = setting(env, "ZWATCH_CURVE_DIR")
            assert curve_dir, f"{c['name']}: CURVE is off in the secure overlay"
            # Lay out what the kubelet would mount (secret items), then load it as the actor does.
            root = tmp_path / c["name"]
            for m in c["volumeMounts"]:
                if m["mountPath"] == curve_dir or m["mountPath"].startswith(curve_dir + "/"):
                    secret = volumes[m["name"]]["secret"]
                    data = secrets[secret["secretName"]]["data"]
                    items = secret.get("items") or [{"key": k, "path": k} for k in data]
                    for item in items:
                        f = root / os.path.relpath(m["mountPath"], curve_dir) / item["path"]
                        f.parent.mkdir(parents=True, exist_ok=True)
                        f.write_bytes(base64.b64decode(data[item["key"]]))
            for clients in ("any", "known"):
                sec = security.load(role(c), {"ZWATCH_CURVE_DIR": str(root), "ZWATCH_CURVE_CLIENTS": clients})
                assert sec.on and sec.public and sec.secret
                loaded.append((c["name"], clients, len(sec.internal), len(sec.clients)))
            if role(c) == "fanout":
                server_key = env["ZWATCH_CURVE_SERVER_KEY"]
                assert (root / os.path.relpath(server_key, curve_dir)).is_file(), server_key
    print(loaded)
    assert {n for n, *_ in loaded} == {"writer", "syncer", "fanout"}
    assert all(internal == 1 for n, _, internal, _ in loaded if n != "fanout")
    assert [clients for n, mode, _, clients in loaded if n == "fanout" and mode == "known"] == [1]


def test_no_secret_key_is_committed_under_deploy():
    tracked = subprocess.run(["git", "ls-files", "-z", "deploy"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip(f"not a git checkout: {tracked.stderr.strip()}")
    files = [f for f in tracked.stdout.split("\0") if f]
    assert files
    assert not [f for f in files if "secret-key" in (ROOT / f).read_text(errors="replace")]
    assert "keys/" in (K8S / "overlays" / "secure" / ".gitignore").read_text().split()


# ================================================================ Containerfile and entry point
def containerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(x for x in CONTAINERFILE.read_text().splitlines() if not x.lstrip().startswith("#")))
    return [(w[0].upper(), w[1] if len(w) > 1 else "") for w in (x.strip().split(None, 1) for x in text.splitlines()) if w]


def image_env() -> dict[str, str]:
    env = {}
    for ins, args in containerfile():
        if ins == "ENV":
            env.update(w.split("=", 1) for w in shlex.split(args))
    return env


def test_containerfile_user_volume_settings_ports_and_healthcheck():
    ins = containerfile()
    by = lambda name: [a for i, a in ins if i == name]          # noqa: E731
    assert all(a.split()[0] == "python:3.11-slim" for a in by("FROM")) and len(by("FROM")) == 2
    assert any("pip install '.[metrics]'" in a for a in by("RUN"))
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "metrics" in project["project"]["optional-dependencies"]
    # The build stage copies what `pip install .` needs: pyproject, the readme, every package's folder.
    copied = {w.rstrip("/").removeprefix("./") for a in by("COPY") if "--from" not in a for w in a.split()[:-1]}
    needed = {"pyproject.toml", project["project"]["readme"],
              *(d.split("/")[0] for d in project["tool"]["setuptools"]["package-dir"].values())}
    assert needed <= copied, f"the Containerfile does not COPY {needed - copied}"
    assert by("USER")[-1] == "10001:10001"
    (volume,) = by("VOLUME")
    assert by("WORKDIR")[-1] == volume
    env = image_env()
    for name, value in env.items():
        if name.startswith("ZWATCH_"):
            assert name in settings.BY_NAME, f"Containerfile: {name} is not a declared setting"
            settings.BY_NAME[name].parse(value)
    assert env["ZWATCH_DATA_DIR"].startswith(volume + "/")
    exposed = {int(p) for a in by("EXPOSE") for p in a.split()}
    ports = {int(env[v]) for v in METRICS_PORT.values()} | {endpoint(env["ZWATCH_FANOUT_ENDPOINT"])[1]}
    assert ports <= exposed, ports - exposed
    copied = [a.split()[-1] for a in by("COPY") if "deploy/container/entrypoint.sh" in a]
    assert copied and copied[0].startswith("/usr/local/bin/")
    name = Path(copied[0]).name
    assert by("ENTRYPOINT") == [f'["{name}"]']
    assert re.fullmatch(rf'.*CMD \["{name}", "health"\]', by("HEALTHCHECK")[0])


def test_entrypoint_is_posix_sh_and_declared_settings_only():
    for shell in ("sh", "dash"):
        if shutil.which(shell):
            out = subprocess.run([shell, "-n", str(ENTRYPOINT)], capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK)


def test_every_setting_name_in_deploy_files_is_declared():
    files = [p for p in [*K8S.rglob("*"), COMPOSE, CONTAINERFILE, ENTRYPOINT]
             if p.is_file() and "keys" not in p.relative_to(DEPLOY).parts]
    names = {}
    for p in files:
        for name in SETTING_NAME.findall(p.read_text()):
            names.setdefault(name, p.relative_to(ROOT))
    print(len(files), "files,", len(names), "names")
    undeclared = {n: str(p) for n, p in names.items() if n not in settings.BY_NAME}
    assert not undeclared, f"not declared in protocol/settings.py: {undeclared}"
    assert len(names) > 10


# ================================================================ compose
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|s|m|h)", text))


def test_compose_validates_against_the_compose_spec():
    # check-jsonschema ships the compose-spec schema (vendor.compose-spec): no network needed.
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                          str(COMPOSE)], capture_output=True, text=True, timeout=120)
    print(out.stdout, out.stderr)
    assert out.returncode == 0


def test_compose_roles_volume_pid_health_and_endpoints():
    services = compose()["services"]
    env0 = image_env()

    def env(name):
        return {**env0, **{k: str(v) for k, v in (services[name].get("environment") or {}).items()}}

    def command(name):
        return services[name].get("command") or []

    by_role = {r: [n for n in services if command(n)[:1] == [r]] for r in ROLES}
    assert [len(by_role[r]) for r in ROLES] == [1, 1, 3], by_role
    (writer,), (syncer,) = by_role["writer"], by_role["syncer"]
    for name, e in ((n, env(n)) for n in services):
        for k, v in e.items():
            if k.startswith("ZWATCH_"):
                assert k in settings.BY_NAME, f"{name}: {k}"
                settings.BY_NAME[k].parse(v)

    # One LMDB directory, one host, one PID namespace (LMDB's reader locks are per pid).
    mounts = set()
    for name in (writer, syncer):
        data_dir = env(name)["ZWATCH_DATA_DIR"]
        (vol,) = [v for v in services[name]["volumes"] if data_dir.startswith(v.split(":")[1].rstrip("/") + "/")]
        mounts.add(vol)
    assert len(mounts) == 1 and next(iter(mounts)).split(":")[0] in compose()["volumes"], mounts
    pids = {services[n].get("pid") for n in (writer, syncer)}
    assert len(pids) == 1 and (pid := pids.pop()) and pid.startswith("service:") and pid[8:] in services, pids

    # Health checks on each actor's metrics port; start order by health.
    for r in ROLES:
        for name in by_role[r]:
            test = services[name]["healthcheck"]["test"]
            assert test[:4] == ["CMD", "zwatch", "probe", "ready"], test
            assert int(test[test.index("--port") + 1]) == int(env(name)[METRICS_PORT[r]]), name
    drain_s = settings.get("ZWATCH_DRAIN_S", env(by_role["fanout"][0]))
    bound = {var: (n, endpoint(env(n)[var])[1]) for r in ("writer", "syncer") for n in by_role[r] for var in BINDS[r]}
    for name in by_role["fanout"]:
        s = services[name]
        assert {k: v["condition"] for k, v in s["depends_on"].items()} == {writer: "service_healthy", syncer: "service_healthy"}
        assert seconds(s["stop_grace_period"]) > drain_s, f"{name}: SIGKILL before the drain ends"
        for var, (host_service, port) in bound.items():
            assert endpoint(env(name)[var]) == (host_service, port), f"{name}: {var}={env(name)[var]}"
        assert endpoint(env(name)["ZWATCH_FANOUT_ADVERTISE"])[0] == s["hostname"] == name
    for var, (name, port) in bound.items():
        assert endpoint(env(name)[var])[0] in ("0.0.0.0", "*"), f"{name}: {var} must bind all interfaces"

    # The client: a watch over every fan-out's client port, started once they are healthy.
    (client,) = [n for n in services if "watch" in command(n)]
    cmd = command(client)
    assert "--prefix" in cmd
    client_port = endpoint(env0["ZWATCH_FANOUT_ENDPOINT"])[1]
    listed = [endpoint(e) for e in cmd[cmd.index("--endpoints") + 1].split(",")]
    assert listed == [(n, client_port) for n in by_role["fanout"]]
    assert {k: v["condition"] for k, v in services[client]["depends_on"].items()} == dict.fromkeys(by_role["fanout"], "service_healthy")
