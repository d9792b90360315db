"""kuberay_schemas.locate: the shared copy, a pinned download over real HTTP, and clear failures."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import kuberay_schemas
import pytest
from kuberay_schemas import SHA256, SchemasMissing, locate


@pytest.fixture(scope="module")
def originals() -> Path:
    return locate()


@pytest.fixture
def mirror(originals: Path, tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server with the pinned files, standing in for the KubeRay repository."""
    root = tmp_path / "mirror"
    shutil.copytree(originals, root)
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(root))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=10)


def test_the_found_files_have_the_pinned_hashes(originals: Path) -> None:
    assert sorted(p.name for p in originals.iterdir() if p.name in SHA256) == sorted(SHA256)


def test_without_a_shared_copy_the_files_are_downloaded_and_verified(mirror: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert locate({}, shared=tmp_path / "none", cache=cache, source=mirror) == cache
    assert kuberay_schemas._complete(cache)
    assert not list(cache.glob(".*.part"))


def test_a_download_with_other_bytes_is_refused(mirror: str, tmp_path: Path) -> None:
    (Path(tmp_path / "mirror") / "ray.io_rayjobs.yaml").write_text("tampered")
    with pytest.raises(SchemasMissing, match=r"ray.io_rayjobs.yaml has sha256 \w+, expected 01a5cf3b"):
        locate({}, shared=tmp_path / "none", cache=tmp_path / "cache", source=mirror)
    assert not (tmp_path / "cache" / "ray.io_rayjobs.yaml").exists()


def test_no_copy_and_no_network_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(SchemasMissing, match="NEXRL_KUBERAY_CRDS") as info:
        locate({}, shared=tmp_path / "none", cache=tmp_path / "cache", source="http://127.0.0.1:9")
    assert kuberay_schemas.KUBERAY_COMMIT in str(info.value) and str(tmp_path / "cache") in str(info.value)


def test_an_env_folder_must_hold_both_files(tmp_path: Path) -> None:
    with pytest.raises(SchemasMissing, match=r"NEXRL_KUBERAY_CRDS=.* lacks"):
        locate({"NEXRL_KUBERAY_CRDS": str(tmp_path)})
