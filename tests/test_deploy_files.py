"""deploy/: the Dockerfile, compose file, Kubernetes manifests and systemd unit hold together.

No Docker, cluster or systemd boot is needed: YAML is parsed, the manifests
are checked against the Kubernetes schemas shipped with kubernetes-validate
(offline), the unit goes through `systemd-analyze verify` (skipped, saying
why, where it cannot run), the Dockerfile is read instruction by instruction,
and every FWREPO_* variable the files use must be a setting fwrepo knows —
and the values given must pass fwrepo's own settings parser.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from repo_service.errors import SettingsError
from repo_service.settings import SETTINGS, load_settings
from tests.support.checkout import ROOT, cli_modules

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
NGINX = DEPLOY / "lb" / "nginx.conf"
DOCKERFILE = DEPLOY / "Dockerfile"
UNIT = DEPLOY / "fwrepo.service"
# The oldest Kubernetes still commonly run that has every field used here
# (the net.ipv4.ip_unprivileged_port_start safe sysctl, NetworkPolicy endPort).
KUBERNETES_VERSION = "1.30.0"

SETTING_VARIABLES = {setting.env for setting in SETTINGS}
# Read by the CLI's remote commands, not settings: FWREPO_URL, FWREPO_KEY, FWREPO_CACERT, ...
CLIENT_VARIABLES = {variable for module in cli_modules()
                    for variable in re.findall(r'environ\.get\("(FWREPO_[A-Z0-9_]+)"', module.read_text())}
VARIABLE = re.compile(r"\bFWREPO_[A-Z0-9_]*[A-Z0-9]\b")


def manifest_files() -> list[Path]:
    return sorted(path for path in KUBERNETES.glob("*.yaml") if path.name != "kustomization.yaml")


def manifests() -> list[tuple[str, dict[str, Any]]]:
    return [(f"{path.name}:{document['kind']}/{document['metadata']['name']}", document)
            for path in manifest_files() for document in yaml.safe_load_all(path.read_text()) if document]


def manifest(kind: str, name: str = "fwrepo") -> dict[str, Any]:
    for _, document in manifests():
        if document["kind"] == kind and document["metadata"]["name"] == name:
            return document
    raise AssertionError(f"no {kind} {name} in {KUBERNETES}")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def port_range(text: str) -> range:
    low, high = (int(part) for part in text.split("-"))
    return range(low, high + 1)


def interpolated(value: str, variables: dict[str, str]) -> str:
    """What docker compose makes of ${NAME}, ${NAME:?message} and ${NAME:-default}."""
    def replace(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        name = name.split(":?")[0]
        return variables.get(name, default)

    return re.sub(r"\$\{([^}]+)\}", replace, value)


# -- YAML and the Kubernetes schemas ---------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE, *sorted(KUBERNETES.glob("*.yaml"))], ids=lambda path: path.name)
def test_yaml_parses(path: Path) -> None:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert documents, f"{path} holds no YAML document"
    assert all(isinstance(document, dict) for document in documents)


@pytest.mark.parametrize(("name", "document"), manifests(), ids=[name for name, _ in manifests()])
def test_kubernetes_manifest_matches_the_schema(name: str, document: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    # strict: a misspelt or misplaced field fails instead of being dropped by the API server.
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misplaced_field() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = json.loads(json.dumps(manifest("Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_placeholder_secrets() -> None:
    resources = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    expected = {path.name for path in manifest_files()} - {"placeholders.yaml"}
    assert set(resources) == expected


def test_kubernetes_kinds_are_all_there() -> None:
    kinds = {document["kind"] for _, document in manifests()}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler", "PodDisruptionBudget",
            "NetworkPolicy"} <= kinds


def test_pods_run_unprivileged_on_a_read_only_root() -> None:
    pod = manifest("Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert {"/tmp", "/var/lib/fwrepo"} <= mounts, "a read-only root needs somewhere to write"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_placeholder_secrets_are_refused_by_fwrepo() -> None:
    # Applied by mistake, the placeholders must stop start-up, not become a secret everybody knows.
    environment = {**manifest("ConfigMap", "fwrepo-config")["data"], **manifest("Secret", "fwrepo-env")["stringData"]}
    assert all("CHANGE-ME" in value for value in manifest("Secret", "fwrepo-env")["stringData"].values())
    with pytest.raises(SettingsError, match="FWREPO_TOKEN_SECRET"):
        load_settings(environment)


def test_kubernetes_settings_load_once_the_secrets_are_real() -> None:
    environment = {**manifest("ConfigMap", "fwrepo-config")["data"], **manifest("Secret", "fwrepo-env")["stringData"],
                   "FWREPO_TOKEN_SECRET": "x" * 32, "FWREPO_KEY_PASSPHRASE": "a real passphrase",
                   "FWREPO_FTPS_PUBLIC_HOST": "192.0.2.7", "FWREPO_FTPS_MASQUERADE_ADDRESS": "192.0.2.7"}
    container = manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {entry["name"] for entry in container["env"]} <= SETTING_VARIABLES
    settings = load_settings(environment)
    assert settings.env == "production" and settings.storage == "s3"
    assert (settings.ftps_port, settings.ftps_implicit_port) == (21, 990)


def test_kubernetes_passive_ports_are_opened_where_fwrepo_announces_them() -> None:
    passive = port_range(manifest("ConfigMap", "fwrepo-config")["data"]["FWREPO_FTPS_PASSIVE_PORTS"])
    container = manifest("Deployment")["spec"]["template"]["spec"]["containers"][0]
    host_ports = {port["hostPort"] for port in container["ports"] if "hostPort" in port}
    assert host_ports == set(passive) | {21, 990}
    assert all(port["hostPort"] == port["containerPort"] for port in container["ports"] if "hostPort" in port)
    allowed = manifest("NetworkPolicy")["spec"]["ingress"][0]["ports"]
    assert {"protocol": "TCP", "port": passive.start, "endPort": passive.stop - 1} in allowed
    assert {port["port"] for port in allowed} >= {8443, 21, 990}


# -- compose and its balancer ----------------------------------------------------------


def fwrepo_replicas() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose()["services"].items()
            if name.startswith("fwrepo-") and "profiles" not in service}


def test_compose_runs_two_replicas_with_their_peers() -> None:
    services = compose()["services"]
    assert len(fwrepo_replicas()) == 2
    assert {"postgres", "minio", "lb"} <= set(services)
    for name, service in fwrepo_replicas().items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert any(str(mount).startswith("/tmp") for mount in service["tmpfs"]), name
        assert any(str(volume).startswith("fwrepo-keys:/etc/fwrepo/keys") for volume in service["volumes"]), name


def test_compose_replicas_share_what_must_be_shared() -> None:
    environments = [service["environment"] for service in fwrepo_replicas().values()]
    for variable in ("FWREPO_TOKEN_SECRET", "FWREPO_KEY_PASSPHRASE", "FWREPO_PUBLIC_URL", "FWREPO_DATABASE_URL",
                     "FWREPO_S3_BUCKET", "FWREPO_KEYS_DIR"):
        values = {environment[variable] for environment in environments}
        assert len(values) == 1, f"{variable} differs between replicas: {values}"


def test_each_replica_owns_a_passive_range_the_balancer_routes_to_it() -> None:
    nginx = NGINX.read_text()
    routes = {(int(low), int(high)): upstream for low, high, upstream in re.findall(
        r"listen (\d+)-(\d+);\s*proxy_pass ([\w-]+):\$server_port;", nginx)}
    published = [str(port) for port in compose()["services"]["lb"]["ports"]]
    ranges = []
    for name, service in fwrepo_replicas().items():
        environment = service["environment"]
        assert environment.get("FWREPO_FTPS_MASQUERADE_ADDRESS"), f"{name} sends no address in PASV replies"
        passive = port_range(environment["FWREPO_FTPS_PASSIVE_PORTS"])
        assert routes.get((passive.start, passive.stop - 1)) == name, f"the balancer does not send {passive} to {name}"
        assert f"{passive.start}-{passive.stop - 1}:{passive.start}-{passive.stop - 1}" in published
        ranges.append(set(passive))
    assert not ranges[0] & ranges[1], "the replicas' passive ranges overlap"
    for port in ("443:443", "21:21", "990:990"):
        assert port in published


def test_compose_settings_load() -> None:
    variables = {"PUBLIC_HOST": "fw.example.net", "PUBLIC_IP": "203.0.113.10", "POSTGRES_PASSWORD": "0123abcd",
                 "MINIO_ROOT_USER": "fwrepo", "MINIO_ROOT_PASSWORD": "0123abcd",
                 "FWREPO_KEY_PASSPHRASE": "a real passphrase", "FWREPO_TOKEN_SECRET": "x" * 32}
    for name, service in fwrepo_replicas().items():
        environment = {key: interpolated(str(value), variables) for key, value in service["environment"].items()}
        settings = load_settings(environment)
        assert settings.public_url == "https://fw.example.net", name
        assert settings.ftps_masquerade_address == "203.0.113.10", name


def test_compose_env_example_names_every_variable_compose_needs() -> None:
    needed = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    example = DEPLOY / "compose.env.example"
    given = set(re.findall(r"^(\w+)=", example.read_text(), re.MULTILINE))
    assert needed <= given


# -- every FWREPO_* variable is a real one ---------------------------------------------


@pytest.mark.parametrize("path", sorted(path for path in DEPLOY.rglob("*") if path.is_file()),
                         ids=lambda path: str(path.relative_to(DEPLOY)))
def test_deploy_files_use_only_known_variables(path: Path) -> None:
    unknown = set(VARIABLE.findall(path.read_text())) - SETTING_VARIABLES - CLIENT_VARIABLES
    assert not unknown, f"{path.relative_to(ROOT)} uses variables fwrepo does not read: {sorted(unknown)}"


def test_systemd_env_example_loads() -> None:
    lines = (DEPLOY / "fwrepo.env.example").read_text().splitlines()
    environment = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    environment.update(FWREPO_TOKEN_SECRET="x" * 32)
    settings = load_settings(environment)
    assert settings.port == 443 and settings.env == "production"


# -- the Dockerfile ---------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        command, _, arguments = (pending + stripped).partition(" ")
        instructions.append((command.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(index for index, (command, _) in enumerate(instructions) if command == "FROM")
    return instructions[last_from:]


def test_dockerfile_is_a_slim_multi_stage_build() -> None:
    instructions = dockerfile_instructions()
    arguments = dict(argument.split("=", 1) for command, argument in instructions if command == "ARG" and "=" in argument)
    bases = [argument.split()[0] for command, argument in instructions if command == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        image = arguments.get(base.strip("${}"), base)
        assert re.match(r"(python:3\.11-slim|debian:12-slim)", image), image
    assert any(command == "COPY" and argument.startswith("--from=") for command, argument in final_stage())


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = [argument for command, argument in final_stage() if command == "USER"]
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_has_a_healthcheck_on_healthz() -> None:
    checks = [argument for command, argument in final_stage() if command == "HEALTHCHECK"]
    assert len(checks) == 1
    options, _, command = checks[0].partition("CMD ")
    assert "--interval" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "/healthz" in argv[2] and "127.0.0.1" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")


def test_dockerfile_healthcheck_fails_when_nothing_answers(tmp_path: Path) -> None:
    checks = [argument for command, argument in final_stage() if command == "HEALTHCHECK"]
    snippet = json.loads(checks[0].partition("CMD ")[2])[2]
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, "-c", snippet], env={"FWREPO_PORT": str(port)}, capture_output=True,
                            timeout=30)
    assert result.returncode != 0


def test_dockerfile_brings_in_no_secrets() -> None:
    instructions = dockerfile_instructions()
    assert not [argument for command, argument in instructions if command == "ADD"], "use COPY, not ADD"
    secret = re.compile(r"(\.key|\.pem|\.p12|\.pfx|\.env|passphrase|secret|(^|/)keys/?$|(^|/)var/?$|(^|/)tls/?$)")
    for command, argument in instructions:
        if command != "COPY":
            continue
        sources = [word for word in shlex.split(argument) if not word.startswith("--")][:-1]
        for source in sources:
            assert not secret.search(source), f"COPY {source} may bring a secret into the image"
    assert "secret" not in " ".join(argument.lower() for command, argument in instructions if command in ("ENV", "ARG"))


def test_dockerfile_keeps_data_in_the_volume_and_exposes_the_ports() -> None:
    stage = final_stage()
    environment = " ".join(argument for command, argument in stage if command == "ENV")
    assert "FWREPO_DATA_DIR=/var/lib/fwrepo" in environment
    assert any(command == "VOLUME" and "/var/lib/fwrepo" in argument for command, argument in stage)
    exposed = " ".join(argument for command, argument in stage if command == "EXPOSE").split()
    ports = {entry.split("/")[0] for entry in exposed}
    assert {"8443", "2121", "21", "9990", "990"} <= ports
    assert any("-" in port for port in ports), "no passive port range exposed"


# -- the systemd unit -------------------------------------------------------------------


def systemd_unavailable_reason() -> str | None:
    if shutil.which("systemd-analyze") is None:
        return "systemd-analyze is missing (Debian package systemd; `make test` installs it when run as root)"
    probe = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"systemd-analyze cannot run here: {(probe.stderr or probe.stdout).strip()}"
    return None


def verify_unit(tmp_path: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    # A scratch root: the unit where systemd looks, a stand-in for the installed
    # /opt/fwrepo/bin/fwrepo (verify checks ExecStart= is executable), and the
    # system's own units for the targets it names.
    root = tmp_path / "root"
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    (root / "etc" / "systemd" / "system" / UNIT.name).write_text(unit_text)
    executable = root / "opt" / "fwrepo" / "bin" / "fwrepo"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    # Copies, not a link: the system's units link to each other by absolute
    # paths, which --root would send round in circles.
    units = root / "usr" / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    for system_units in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")):
        for source in system_units.glob("*.target") if system_units.is_dir() else ():
            if source.is_file() and not source.is_symlink() and not (units / source.name).exists():
                shutil.copyfile(source, units / source.name)
    return subprocess.run(["systemd-analyze", "verify", f"--root={root}", UNIT.name],
                          capture_output=True, text=True, timeout=60)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    reason = systemd_unavailable_reason()
    if reason:
        print(reason)
        pytest.skip(reason)
    good = verify_unit(tmp_path / "probe", "[Service]\nExecStart=/opt/fwrepo/bin/fwrepo serve\n")
    if good.returncode != 0 or good.stderr.strip():
        reason = f"systemd-analyze verify does not work in this container: {good.stderr.strip() or good.returncode}"
        print(reason)
        pytest.skip(reason)
    result = verify_unit(tmp_path / "unit", UNIT.read_text())
    # Unknown or misspelt directives are only warnings (exit 0): any output fails too.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_systemd_verify_would_catch_a_misspelt_directive(tmp_path: Path) -> None:
    if systemd_unavailable_reason():
        pytest.skip(systemd_unavailable_reason() or "")
    result = verify_unit(tmp_path, UNIT.read_text().replace("NoNewPrivileges=", "NoNewPrivilege="))
    if result.returncode != 0 and "Unknown key" not in result.stderr:
        pytest.skip(f"systemd-analyze verify does not work in this container: {result.stderr.strip()}")
    assert "Unknown key" in result.stderr


def test_systemd_unit_is_hardened() -> None:
    directives: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            directives.setdefault(key.strip(), []).append(value.strip())
    assert directives["ProtectSystem"] == ["strict"]
    assert directives["NoNewPrivileges"] == ["yes"]
    assert directives["PrivateTmp"] == ["yes"]
    assert directives["StateDirectory"] == ["fwrepo"]
    assert directives["EnvironmentFile"] == ["/etc/fwrepo/fwrepo.env"]
    assert directives.get("DynamicUser") == ["yes"] or directives.get("User", ["root"])[-1] not in ("root", "0")
    assert set(" ".join(directives["CapabilityBoundingSet"]).split()) <= {"CAP_NET_BIND_SERVICE"}
    assert set(" ".join(directives.get("AmbientCapabilities", [])).split()) <= {"CAP_NET_BIND_SERVICE"}
