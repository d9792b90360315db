"""A vLLM-CPU replica's start with its caches cold vs warm: what the operator's cache folders on the
job's claim (`VLLM_CACHE_ROOT`, `TORCHINDUCTOR_CACHE_DIR` under `<mountPath>/.cache`) save a
restarted replica or the next job on the claim.

    .venv/bin/python bench/vllm_cold_start.py

Starts SmolLM2-135M (converted once) as the box's replicas run it, twice with one fresh cache folder:
seconds to `/health` and to the first sampled completion (the CPU sampler's torch.compile). Prints a
line per start; the last line is `vllm_cold_start: cold_ready_s=.. warm_ready_s=.. cold_first_s=..
warm_first_s=..`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from nexrl_runtime.inference.vllm_server import free_port
from nexrl_runtime.models.convert import convert

ARGS = ["--max-model-len", "512", "--dtype", "float32", "-O0", "--kv-cache-memory-bytes", "268435456"]


def start_once(model: str, cache: Path, log: Path) -> dict[str, float]:
    port = free_port()
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CACHE_ROOT": str(cache / "vllm"),
           "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor")}
    argv = [sys.executable, "-m", "nexrl_runtime.inference.vllm_server", "serve", model,
            "--host", "127.0.0.1", "--port", str(port), *ARGS]
    started = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"vLLM exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        ready = time.monotonic()
        body = {"model": model, "prompt": "1+1=", "max_tokens": 8, "temperature": 1.0, "logprobs": 1}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=600).read()
        return {"ready_s": round(ready - started, 1), "first_s": round(time.monotonic() - ready, 1)}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    model = str(convert())
    with tempfile.TemporaryDirectory(prefix="vllm-cache-") as tmp:
        cache = Path(tmp)
        cold = start_once(model, cache, cache / "cold.log")
        print(json.dumps({"start": "cold", **cold}), flush=True)
        warm = start_once(model, cache, cache / "warm.log")
        print(json.dumps({"start": "warm", **warm}), flush=True)
    print(f"vllm_cold_start: cold_ready_s={cold['ready_s']} warm_ready_s={warm['ready_s']} "
          f"cold_first_s={cold['first_s']} warm_first_s={warm['first_s']}")


if __name__ == "__main__":
    main()
