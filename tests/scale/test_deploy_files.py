"""The cluster examples in deploy/ stay valid YAML and install finegrain with its ray extra on every node."""
from __future__ import annotations

from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_ray_up_config_installs_finegrain_with_the_ray_extra_on_every_node():
    config = yaml.safe_load((DEPLOY / "ray-cluster.yaml").read_text())
    assert config["head_node_type"] in config["available_node_types"]
    assert any("finegrain-*.whl)[ray]" in c for c in config["setup_commands"])
    assert all("ray start" in c or "ray stop" in c for c in config["worker_start_ray_commands"])


def test_kuberay_cluster_runs_the_finegrain_image_on_head_and_workers():
    cluster = yaml.safe_load((DEPLOY / "kuberay-raycluster.yaml").read_text())
    assert cluster["kind"] == "RayCluster" and cluster["apiVersion"].startswith("ray.io/")
    images = [c["image"] for c in cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]]
    images += [c["image"] for g in cluster["spec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    assert len(set(images)) == 1 and "finegrain" in images[0]
    assert "[ray]" in (DEPLOY / "Dockerfile").read_text()
