"""`chipletc explore --executor ray` on a local Ray instance: the same points as local."""

from __future__ import annotations

import pytest

from chipletc.compiler.explore import ExploreOptions, explore, parse_space, to_csv

ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'chipletc[ray]'")

SPACE = {
    "name": "ray-small",
    "chiplet": {"area_mm2": [200, 300], "mac_ratio": [0.02, 0.1], "ops_per_sram_read": [4]},
    "server": {"packages_per_lane": [8, 16]},
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_executor_gives_the_local_points(zoo_graph, local_ray):
    graph = zoo_graph("gpt3-175b")
    space = parse_space(SPACE, "ray-small.yaml")
    local = explore([graph], space, ExploreOptions(chunk_size=2))
    on_ray = explore([graph], space, ExploreOptions(executor="ray", workers=2, chunk_size=2))
    assert on_ray.complete and on_ray.points == local.points
    assert to_csv(on_ray.points) == to_csv(local.points)
    assert any(p["status"] == "ok" for p in local.points)
