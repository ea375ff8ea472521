"""Cluster launch files in cluster/: valid for Ray's launcher, and safe.

The `ray up` files go through Ray's own offline steps (`prepare_config` merges the provider
defaults, `validate_config` checks the schema and cross-field rules) -- exactly what `ray up`
runs before it contacts a cloud. The KubeRay manifest is checked structurally. Every file is
checked for what matters operationally: no literal credentials, a head that advertises the
`trial_driver` resource, GPU workers, a dashboard that is not bound to every interface, no
ports opened to the internet, and Ray 2.60.0 with [default] installed.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
LAUNCHER_FILES = ("aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml")
KUBERAY_FILE = "kuberay-raycluster.yaml"
RAY_PIN = re.compile(r"ray\[[^\]]*\bdefault\b[^\]]*\]==2\.60\.0")


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER_DIR / name).read_text())


def _prepared(name: str) -> dict[str, Any]:
    cfg = prepare_config(copy.deepcopy(_load(name)))
    validate_config(cfg)
    return cfg


def _commands(cfg: dict[str, Any]) -> str:
    keys = ("setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands", "initialization_commands")
    return "\n".join(c for k in keys for c in cfg.get(k, []))


def test_every_expected_file_exists() -> None:
    for name in (*LAUNCHER_FILES, KUBERAY_FILE):
        assert (CLUSTER_DIR / name).is_file(), name


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_file_passes_rays_offline_validation(name: str) -> None:
    cfg = _prepared(name)
    assert cfg["head_node_type"] in cfg["available_node_types"]


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_file_installs_ray_260_default_and_explore(name: str) -> None:
    cmds = _commands(_prepared(name))
    assert RAY_PIN.search(cmds), "setup must pip install ray[default,...]==2.60.0"
    assert "pip install -q -e ~/explore" in cmds
    assert _load(name)["file_mounts"]["~/explore"] == "."


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_dashboard_bound_to_loopback_and_token_auth(name: str) -> None:
    cfg = _prepared(name)
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head
    for cmds in (cfg["head_start_ray_commands"], cfg["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token" in " ".join(cmds)
    assert "~/.ray/auth_token" in cfg["file_mounts"]


@pytest.mark.parametrize("name", ("aws-gpu.yaml", "gcp-gpu.yaml"))
def test_cloud_head_advertises_trial_driver_and_workers_have_gpus(name: str) -> None:
    cfg = _prepared(name)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["resources"]
    assert head.get("trial_driver", 0) >= 1
    assert head.get("CPU") == 0, "the head should not take training work"
    workers = [t for n, t in types.items() if n != cfg["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert all(t["max_workers"] >= 1 for t in workers)


def test_onprem_head_advertises_trial_driver_on_ray_start() -> None:
    # The local provider passes no node-type resources to `ray start`; they must be flags.
    cfg = _prepared("onprem.yaml")
    head = " ".join(cfg["head_start_ray_commands"])
    m = re.search(r"--resources='(\{.*?\})'", head)
    assert m and json.loads(m.group(1))["trial_driver"] >= 1
    assert cfg["provider"]["head_ip"] and cfg["provider"]["worker_ips"]


def test_aws_uses_instance_profiles_and_opens_no_extra_ports() -> None:
    cfg = _prepared("aws-gpu.yaml")
    for name, t in cfg["available_node_types"].items():
        assert "IamInstanceProfile" in t["node_config"], name
        if name != cfg["head_node_type"]:
            assert t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    # Ray's own group admits only cluster members + SSH; any extra rule must not be public.
    for rule in cfg["provider"].get("security_group", {}).get("IpPermissions", []):
        assert all(r["CidrIp"] != "0.0.0.0/0" for r in rule.get("IpRanges", [])), rule


def test_gcp_workers_use_a_service_account_and_gpus() -> None:
    cfg = _prepared("gcp-gpu.yaml")
    accelerators = set()
    for name, t in cfg["available_node_types"].items():
        if name == cfg["head_node_type"]:
            continue
        nc = t["node_config"]
        assert nc["serviceAccounts"][0]["email"].endswith(".iam.gserviceaccount.com")
        assert nc["scheduling"]["onHostMaintenance"] == "TERMINATE"
        accelerators |= {a["acceleratorType"] for a in nc["guestAccelerators"]}
    assert accelerators == {"nvidia-tesla-t4", "nvidia-l4"}


_SECRET_PATTERNS = (
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),                         # AWS access key ids
    re.compile(r"aws_secret_access_key\s*[:=]\s*\S", re.IGNORECASE),
    re.compile(r"AWS_SECRET_ACCESS_KEY\s*[:=]\s*['\"]?[A-Za-z0-9/+]{20,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\"private_key\"\s*:"),                                  # GCP key JSON
)


def test_no_literal_credentials_anywhere_in_cluster_dir() -> None:
    files = [p for p in CLUSTER_DIR.iterdir() if p.is_file()]
    assert len(files) >= 4
    for path in files:
        text = path.read_text()
        for pattern in _SECRET_PATTERNS:
            assert not pattern.search(text), f"{path.name}: matches {pattern.pattern}"


def test_secret_scan_would_catch_a_planted_key() -> None:
    planted = "env:\n  aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n  id: AKIAIOSFODNN7EXAMPLE\n"
    assert sum(bool(p.search(planted)) for p in _SECRET_PATTERNS) >= 2


def _kuberay() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    docs = [d for d in yaml.safe_load_all((CLUSTER_DIR / KUBERAY_FILE).read_text()) if d]
    clusters = [d for d in docs if d.get("kind") == "RayCluster"]
    assert len(clusters) == 1
    return clusters[0], docs


def test_kuberay_manifest_structure() -> None:
    rc, _ = _kuberay()
    assert rc["apiVersion"] == "ray.io/v1"
    assert rc["spec"]["rayVersion"] == "2.60.0"
    head = rc["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    params = head["rayStartParams"]
    assert params["dashboard-host"] == "127.0.0.1"
    assert json.loads(json.loads(params["resources"]))["trial_driver"] >= 1
    assert params["num-cpus"] == "0"
    head_containers = head["template"]["spec"]["containers"]
    assert len(head_containers) == 1 and head_containers[0]["image"]
    groups = rc["spec"]["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert g["maxReplicas"] >= g["minReplicas"] >= 0
        (c,) = g["template"]["spec"]["containers"]
        assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def test_kuberay_no_public_service_and_secrets_only_by_reference() -> None:
    rc, docs = _kuberay()
    assert rc["spec"]["headGroupSpec"]["serviceType"] == "ClusterIP"
    for d in docs:
        assert d.get("kind") != "Secret", "secrets are created out of band, not in the manifest"
        if d.get("kind") == "Service":
            assert d["spec"].get("type", "ClusterIP") == "ClusterIP"
    containers = [rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        g["template"]["spec"]["containers"][0] for g in rc["spec"]["workerGroupSpecs"]
    ]
    for c in containers:
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        for name, e in env.items():
            if "KEY" in name or "TOKEN" in name or "SECRET" in name:
                assert "value" not in e, f"{name} must come from a secret reference"
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    assert policies and policies[0]["spec"]["podSelector"]["matchLabels"]["ray.io/cluster"] == "explore"


def test_kuberay_image_installs_ray_260_default_and_explore() -> None:
    dockerfile = (CLUSTER_DIR / "Dockerfile").read_text()
    assert re.search(r"^FROM rayproject/ray:2\.60\.0-\S*gpu", dockerfile, re.MULTILINE)
    assert RAY_PIN.search(dockerfile) and "pip install --no-cache-dir -e /home/ray/explore" in dockerfile


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.__setitem__("setup_comands", c.pop("setup_commands")), "setup_comands"),
        (lambda c: c["available_node_types"]["head.cpu"]["resources"].__setitem__("trial_driver", 2.5),
         "is not of type 'integer'"),
        (lambda c: c.__setitem__("head_node_type", "no.such.type"), "head_node_type"),
    ],
    ids=["typo-key", "non-integer-resource", "unknown-head-type"],
)
def test_broken_copies_are_rejected(mutate: Any, message: str) -> None:
    cfg = _load("aws-gpu.yaml")
    mutate(cfg)
    with pytest.raises((jsonschema.ValidationError, ValueError)) as err:
        validate_config(prepare_config(cfg))
    assert message in str(err.value)
