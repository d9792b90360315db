"""Pod sandboxes of the box: a network namespace per pod (a veth pair into one Linux bridge, one IP
each), and per container a private mount namespace and hostname (`ip netns exec` + `unshare --uts`)
with the pod's files bind-mounted where Kubernetes puts them and a private /tmp and /dev/shm.

Needs root, `ip` and `unshare` (util-linux). Everything made here is undone by `close()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence


def _under_tmp(paths: list[pathlib.Path]) -> list[pathlib.Path]:
    """The outermost of `paths` that live under /tmp (nested ones come with them)."""
    tmp = [p for p in paths if p.is_relative_to("/tmp") and p != pathlib.Path("/tmp")]
    return sorted({p for p in tmp if not any(p != q and p.is_relative_to(q) for q in tmp)})


HOST_TMP_KEEP = _under_tmp([pathlib.Path(__file__).resolve().parents[2], pathlib.Path(sys.prefix).resolve()])
"""this checkout and the venv, when they live under /tmp, which each pod mounts privately"""
HOLD = "/run/nexrl-box-host-tmp"


def sh(*args: str) -> str:
    """Run a command; a failure raises with its stderr."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


class Bridge:
    """A Linux bridge `name` with `<prefix>.1/24` on the host side (the node's IP and the API server's
    address) and a network namespace per pod, `<prefix>.2` upwards."""

    def __init__(self, name: str, prefix: str) -> None:
        self.name, self.prefix = name, prefix
        self.host_ip = f"{prefix}.1"
        self._next = itertools.count(2)
        self.namespaces: list[str] = []

    def __enter__(self) -> Bridge:
        if os.geteuid() != 0:
            raise AssertionError("the cluster box needs root (network namespaces, bind mounts)")
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)  # a leftover of a killed run
        sh("ip", "link", "add", self.name, "type", "bridge")
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.name)
        sh("ip", "link", "set", self.name, "up")
        return self

    def add_netns(self, tag: str) -> tuple[str, str]:
        """A new network namespace wired into the bridge: (its name, its IP)."""
        index = next(self._next)
        if index > 254:
            raise RuntimeError("the box's /24 has no address left")
        netns, ip = f"{self.name}-{index}", f"{self.prefix}.{index}"
        host_end, pod_end = f"{self.name[:8]}h{index}", f"{self.name[:8]}p{index}"
        sh("ip", "netns", "add", netns)
        self.namespaces.append(netns)
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", pod_end)
        sh("ip", "link", "set", host_end, "master", self.name, "up")
        sh("ip", "link", "set", pod_end, "netns", netns)
        for cmd in (
            ["link", "set", "lo", "up"],
            ["link", "set", pod_end, "name", "eth0"],
            ["addr", "add", f"{ip}/24", "dev", "eth0"],
            ["link", "set", "eth0", "up"],
            ["route", "add", "default", "via", self.host_ip],
        ):
            sh("ip", "-n", netns, *cmd)
        return netns, ip

    def del_netns(self, netns: str) -> None:
        """Kill whatever still runs in it, then delete it (its veth pair goes with it)."""
        kill_netns(netns)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        if netns in self.namespaces:
            self.namespaces.remove(netns)

    def __exit__(self, *exc: object) -> None:
        for netns in list(self.namespaces):
            self.del_netns(netns)
        subprocess.run(["ip", "link", "del", self.name], capture_output=True)


def netns_pids(netns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
    return [int(pid) for pid in done.stdout.split()]


def kill_netns(netns: str, grace: float = 5.0) -> None:
    """SIGTERM every process in the namespace (whatever sessions they made), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = netns_pids(netns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = netns_pids(netns)
            time.sleep(0.1)
        if not pids:
            return


@dataclasses.dataclass
class Mount:
    """A bind mount of a host path (a folder or a file) at `target` inside the container."""

    source: pathlib.Path
    target: str
    read_only: bool = False


def container_script(
    argv: Sequence[str],
    env: Mapping[str, str],
    mounts: Sequence[Mount],
    hostname: str,
    workdir: str,
    made: list[pathlib.Path],
) -> str:
    """The shell that sets up one container's mount namespace and execs its command.

    Mount points that do not exist on the host (/app, /etc/nexrl, ...) are created as empty folders
    (or files) and recorded in `made`, so that the box removes them afterwards. The bind mounts come
    first, private /tmp and /dev/shm last (the sources may live under /tmp)."""
    lines = ["set -e", "mount --make-rprivate /"]
    if HOST_TMP_KEEP:  # the host's /tmp, held before any volume is mounted over it
        lines += [f"mkdir -p {HOLD}", f"mount --bind /tmp {HOLD}"]
    for mount in mounts:
        target = pathlib.Path(mount.target)
        if not target.exists():
            missing = [p for p in [target, *target.parents] if not p.exists()]
            if mount.source.is_dir():
                target.mkdir(parents=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            made.extend(missing)
        lines.append(f"mount --bind {shlex.quote(str(mount.source))} {shlex.quote(mount.target)}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {shlex.quote(mount.target)}")
    lines += ["mount -t tmpfs -o size=2g tmpfs /dev/shm", "mount -t tmpfs tmpfs /tmp"]
    for keep in HOST_TMP_KEEP:
        rel = shlex.quote(str(keep.relative_to("/tmp")))
        lines += [f"mkdir -p {shlex.quote(str(keep))}", f"mount --bind {HOLD}/{rel} {shlex.quote(str(keep))}"]
    lines += [
        f"hostname {shlex.quote(hostname)}",
        f"cd {shlex.quote(workdir)}",
    ]
    assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    lines.append(f"exec env -i {assignments} {shlex.join(argv)}")
    return "\n".join(lines) + "\n"


def start_container(netns: str, script: pathlib.Path, log: pathlib.Path) -> subprocess.Popen[bytes]:
    """Run a container script inside the pod's network namespace, in a new UTS and mount namespace."""
    with log.open("ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--uts", "--", "bash", str(script)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
