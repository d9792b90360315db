"""spec_changes.py: which spec changes are live and which need a restart."""

from __future__ import annotations

from nexrl_operator.spec_changes import changed_paths, restart_fields


def test_changed_paths_and_restart_fields() -> None:
    applied = {"image": "a", "inference": {"replicas": 1, "gpusPerReplica": 1}, "suspend": False,
               "trainer": {"nodes": 1}, "overrides": ["x=1"]}
    live_only = {**applied, "inference": {"replicas": 4, "gpusPerReplica": 1}, "suspend": True,
                 "maxRestarts": 2}
    assert changed_paths(applied, live_only, "spec") == ["spec.inference.replicas", "spec.maxRestarts",
                                                         "spec.suspend"]
    assert restart_fields(applied, live_only) == []
    shape = {**applied, "image": "b", "inference": {"replicas": 1, "gpusPerReplica": 2},
             "overrides": ["x=2"], "model": {"name": "m"}}
    assert restart_fields(applied, shape) == ["spec.image", "spec.inference.gpusPerReplica",
                                              "spec.model", "spec.overrides"]
