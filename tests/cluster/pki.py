"""A throwaway CA and a server certificate for the box's API endpoint, made with the `openssl` CLI.

The runtime's reporter talks `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` and checks
the server against the pod's ca.crt, as in a cluster; this gives it a CA to check against.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """PEM files: the CA's certificate (a pod's ca.crt) and the server's certificate and key."""

    ca: pathlib.Path
    cert: pathlib.Path
    key: pathlib.Path


def make_pki(folder: pathlib.Path, ips: Sequence[str], names: Sequence[str] = ()) -> TLSFiles:
    """A CA and a server certificate for `ips` and DNS `names` (subjectAltName), valid for a day."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AssertionError("the box needs the openssl CLI to make its API server's certificate")
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.crt", folder / "ca.key"
    cert, key, csr = folder / "server.crt", folder / "server.key", folder / "server.csr"
    san = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{name}" for name in names)])
    ext = folder / "server.ext"
    ext.write_text(
        f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )

    def run(*args: str) -> None:
        done = subprocess.run([openssl, *args], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AssertionError(f"openssl {' '.join(args)} failed:\n{done.stderr}")

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "1",
        "-subj",
        "/CN=nexrl-box-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=kube-apiserver",
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "1",
        "-extfile",
        str(ext),
    )
    return TLSFiles(ca, cert, key)
