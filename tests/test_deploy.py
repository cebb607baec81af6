"""The deployment files, checked without a cluster or a Docker engine: the compose files against the Compose
Specification's JSON schema, the Kubernetes manifests against Kubernetes' own schemas (kubernetes-validate, strict),
every runner's environment through the real settings loader, the shards of a fleet, the fleet's Prometheus
configuration with promtool, and the Dockerfile's promises (non-root, healthcheck, the CLI as entrypoint).
``docker build`` runs only where a Docker engine answers (none does on the project's CI machines)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO, skip_or_fail_under_ci
from ultra_signals.core.config import load_settings
from ultra_signals.core.universe import Shard

DEPLOY = REPO / "deploy"
COMPOSE_FILES = [DEPLOY / "docker-compose.yml", DEPLOY / "fleet" / "docker-compose.yml"]
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
K8S_VERSION = "1.33"


def compose_schema() -> dict[str, Any]:
    path = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_compose_files_follow_the_compose_specification(path: Path) -> None:
    doc = load_yaml(path)
    jsonschema.validate(doc, compose_schema())
    for name, svc in doc["services"].items():  # every file a service mounts from the repository exists
        for vol in svc.get("volumes", []):
            src = str(vol).split(":", 1)[0]
            if src.startswith("."):
                assert (path.parent / src).exists(), f"{name}: {src} does not exist"


def test_the_schema_check_is_not_vacuous() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"services": {"x": {"image": 3, "restart": "sometimes"}}}, compose_schema())


def interpolate(value: object) -> str:
    """Compose's ``${VAR:-default}`` with nothing set in the environment: the default."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def fleet_runners() -> dict[str, dict[str, str]]:
    doc = load_yaml(DEPLOY / "fleet" / "docker-compose.yml")
    services = doc["services"].items()
    return {n: {k: interpolate(v) for k, v in s["environment"].items()} for n, s in services if "runner" in n}


def _env_settings(env: dict[str, str]) -> Any:
    return load_settings(
        environ={k: v for k, v in env.items() if k.startswith("ULTRA_SIGNALS_") and "SECRETS" not in k}
    )


def test_fleet_runners_cover_every_shard_once_with_valid_settings() -> None:
    runners = fleet_runners()
    shards = [Shard.parse(env["ULTRA_SIGNALS_RUNTIME__SHARD"]) for env in runners.values()]
    n = len(runners)
    assert n >= 2 and sorted(s.index for s in shards) == list(range(n)) and {s.count for s in shards} == {n}
    for name, env in runners.items():
        s = _env_settings(env)
        assert s.runtime.universe == "all" and s.redis.enabled and len(s.redis.sentinels) == 3, name
        assert s.redis.on_failure == "block" and s.redis.min_replicas_acked >= 1, name


def test_fleet_sentinels_watch_the_master_the_runners_ask_for() -> None:
    conf = (DEPLOY / "fleet" / "sentinel.conf").read_text(encoding="utf-8")
    m = re.search(r"^sentinel monitor (\S+) (\S+) (\d+) (\d+)$", conf, re.M)
    assert m is not None
    master, host, _, quorum = m.groups()
    env = next(iter(fleet_runners().values()))
    assert env["ULTRA_SIGNALS_REDIS__SENTINEL_MASTER"] == master and host == "redis-primary" and quorum == "2"
    services = load_yaml(DEPLOY / "fleet" / "docker-compose.yml")["services"]
    for addr in env["ULTRA_SIGNALS_REDIS__SENTINELS"].split(","):
        assert addr.split(":")[0] in services


def test_fleet_prometheus_config_scrapes_every_runner(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail_under_ci("promtool not found (apt-get install prometheus)", "under CI it must be installed")
    shutil.copy(DEPLOY / "fleet" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")  # mounted beside it by compose
    res = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    targets = [t for sc in load_yaml(tmp_path / "prometheus.yml")["scrape_configs"] for c in sc["static_configs"]
               for t in c["targets"]]  # fmt: skip
    assert sorted(t.split(":")[0] for t in targets) == sorted(fleet_runners())


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(p.name, d) for p in K8S for d in yaml.safe_load_all(p.read_text(encoding="utf-8")) if d]


@pytest.mark.parametrize("name,doc", k8s_docs(), ids=lambda x: x if isinstance(x, str) else "")
def test_kubernetes_manifests_validate_strictly(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_validation_is_not_vacuous() -> None:
    bad = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "x"}, "spec": {"replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_statefulset_ordinal_is_the_shard_and_replicas_match() -> None:
    docs = {d["kind"]: d for _, d in k8s_docs()}
    sts, cm, svc = docs["StatefulSet"], docs["ConfigMap"], docs["Service"]
    assert sts["spec"]["replicas"] == int(cm["data"]["SHARDS"])
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert 'ULTRA_SIGNALS_RUNTIME__SHARD="${HOSTNAME##*-}/${SHARDS}"' in container["args"][0]
    assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert svc["spec"]["clusterIP"] == "None" and sts["spec"]["serviceName"] == svc["metadata"]["name"]
    for i in range(int(cm["data"]["SHARDS"])):  # the settings each pod would load are valid
        env = {**cm["data"], "ULTRA_SIGNALS_RUNTIME__SHARD": f"{i}/{cm['data']['SHARDS']}"}
        assert _env_settings(env).runtime.shard == f"{i}/3"


def test_secret_template_holds_no_values() -> None:
    docs = {d["kind"]: d for _, d in k8s_docs()}
    assert all(v == "" for v in docs["Secret"]["stringData"].values())


def dockerfile() -> list[str]:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_dockerfile_runs_the_cli_as_a_non_root_user_with_a_healthcheck() -> None:
    lines = dockerfile()
    final = lines[max(i for i, ln in enumerate(lines) if ln.startswith("FROM ")) :]
    users = [ln.split()[1] for ln in final if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(ln.startswith("HEALTHCHECK ") and "/metrics" in ln for ln in final)
    assert 'ENTRYPOINT ["ultra-signals"]' in final
    for ln in lines:  # every COPY from the build context names something that exists
        if ln.startswith("COPY ") and "--from=" not in ln:
            for src in ln.split()[1:-1]:
                assert (REPO / src).exists(), src


def test_docker_image_builds_where_an_engine_answers() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker engine on this machine: the image build is checked where one answers")
    res = subprocess.run([docker, "build", "-t", "ultra-signals:test", str(REPO)], capture_output=True, text=True,
                         timeout=900, check=False)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_every_alert_has_a_unit_test_firing_and_one_not_firing() -> None:
    """alerts_test.yml (run by promtool in tests/test_prometheus_integration.py) shows each rule of alerts.yml both
    firing and silent, and every firing case checks the annotations the operator reads (with a runbook entry in
    docs/operations.md)."""
    rules = {r["alert"] for g in load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"] for r in g["rules"]}
    cases = [c for t in load_yaml(DEPLOY / "prometheus" / "alerts_test.yml")["tests"] for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert rules - firing == set(), "alerts never shown firing"
    assert rules - silent == set(), "alerts never shown silent"
    assert (firing | silent) <= rules, "tests of alerts that do not exist"
    for c in cases:
        for a in c["exp_alerts"]:
            assert a["exp_annotations"]["summary"] and a["exp_annotations"]["description"], c["alertname"]
    runbook = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert [r for r in sorted(rules) if f"| `{r}` |" not in runbook] == [], "alerts without a runbook line"
