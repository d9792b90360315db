"""Where the tests find KubeRay's RayJob and RayCluster CRDs (third-party files, never copied into
this repository): ``$NEXRL_KUBERAY_CRDS``, then ``<repo>/../shared/schemas/kuberay`` (the project's
own machines), then a cache filled by a pinned download. Every file is checked against its sha256.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx

KUBERAY_COMMIT = "feeaf72facab4881ba2b179248bb67315634e229"
"""Just after KubeRay v1.7.0-rc.0 (``git describe``: v1.7.0-rc.0-5-gfeeaf72fa); a commit, not a tag,
because a tag can be moved and the files are pinned by hash anyway."""
SOURCE = f"https://raw.githubusercontent.com/ray-project/kuberay/{KUBERAY_COMMIT}/ray-operator/config/crd/bases"
SHA256 = {
    "ray.io_rayjobs.yaml": "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5",
    "ray.io_rayclusters.yaml": "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
}
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "schemas" / "kuberay"
CACHE_HOME = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
CACHE = CACHE_HOME / "nexrl" / f"kuberay-{KUBERAY_COMMIT[:12]}"


class SchemasMissing(RuntimeError):
    """The CRDs are nowhere to be found and could not be downloaded."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _complete(folder: Path) -> bool:
    """All files present; raises if one is present with other bytes than the pinned ones."""
    if not all((folder / name).is_file() for name in SHA256):
        return False
    for name, want in SHA256.items():
        if (got := _digest(folder / name)) != want:
            raise SchemasMissing(f"{folder / name} has sha256 {got}, expected {want} "
                                 f"(KubeRay commit {KUBERAY_COMMIT})")
    return True


def download(folder: Path, source: str = SOURCE, timeout: float = 60.0) -> None:
    """Fetch the pinned files into ``folder``: each verified, then renamed into place."""
    folder.mkdir(parents=True, exist_ok=True)
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for name, want in SHA256.items():
            body = client.get(f"{source}/{name}").raise_for_status().content
            if (got := hashlib.sha256(body).hexdigest()) != want:
                raise SchemasMissing(f"{source}/{name} has sha256 {got}, expected {want}")
            part = folder / f".{name}.part"
            part.write_bytes(body)
            part.replace(folder / name)


def locate(env: dict[str, str] | None = None, shared: Path = SHARED, cache: Path = CACHE,
           source: str = SOURCE) -> Path:
    """The folder holding both CRDs; downloads them into ``cache`` when no other copy exists."""
    env = os.environ if env is None else env
    if given := env.get("NEXRL_KUBERAY_CRDS"):
        if not _complete(Path(given)):
            raise SchemasMissing(f"NEXRL_KUBERAY_CRDS={given} lacks {' or '.join(SHA256)}")
        return Path(given)
    for folder in (shared, cache):
        if _complete(folder):
            return folder
    try:
        download(cache, source)
    except (httpx.HTTPError, OSError) as exc:
        raise SchemasMissing(
            f"the KubeRay CRDs are needed to validate generated RayJobs and RayClusters and could not "
            f"be downloaded ({exc}). Put {' and '.join(SHA256)} from KubeRay commit {KUBERAY_COMMIT} "
            f"(ray-operator/config/crd/bases) in {cache}, or point NEXRL_KUBERAY_CRDS at a folder "
            f"that has them.") from exc
    return cache
