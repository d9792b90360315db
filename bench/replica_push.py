"""The cost of one disk weight push to 2 vLLM-CPU replicas vs to 1 (issue 12's figure).

    .venv/bin/python bench/replica_push.py [--repeats 3]

Starts two real vLLM-CPU servers of SmolLM2-135M (converted once, `nexrl_runtime.models.convert`),
then times `DiskWeightPusher.push` of the model's state dict to the first replica alone and to both:
one safetensors write, then per replica pause -> reload_weights -> version label -> resume, the
replicas in parallel. Prints the medians; the last line is
`replica_push: bytes=<b> one_s=<a> two_s=<b> write_s=<w> ratio=<two/one>`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from transformers import AutoModelForCausalLM

from nexrl_runtime.config import load_config
from nexrl_runtime.inference.vllm_server import VLLMServer, build_spec, free_port
from nexrl_runtime.inference.vllm_weights import DiskWeightPusher
from nexrl_runtime.models.convert import convert

RECIPE = Path(__file__).resolve().parents[1] / "recipe" / "smollm2_cpu" / "smollm2_cpu.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = convert()
    server_cfg = load_config(RECIPE, [f"model.path={model_dir}"]).inference.server
    state = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).state_dict()
    with tempfile.TemporaryDirectory() as tmp:
        servers = [
            VLLMServer(build_spec(str(model_dir), server_cfg, free_port(), "policy"),
                       Path(tmp) / f"server-{i}.log", server_cfg.startup_timeout_s).launch()
            for i in range(2)
        ]
        try:
            for s in servers:
                s.wait()
            urls = [s.base_url for s in servers]
            pusher = DiskWeightPusher(urls, Path(tmp) / "weights")
            times: dict[int, list[float]] = {1: [], 2: []}
            writes: list[float] = []
            version = 0
            for _ in range(args.repeats):
                for n in (1, 2):
                    version += 1
                    pusher.push(state, version, urls[:n])
                    times[n].append(pusher.last["write_seconds"] + pusher.last["reload_seconds"])
                    writes.append(pusher.last["write_seconds"])
                    print(f"push to {n}: {pusher.last}")
            pusher.close()
        finally:
            for s in servers:
                s.stop()
    one, two, write = (statistics.median(times[1]), statistics.median(times[2]), statistics.median(writes))
    print(f"replica_push: bytes={int(pusher.last['bytes'])} one_s={one:.3f} two_s={two:.3f} "
          f"write_s={write:.3f} ratio={two / one:.2f}")


if __name__ == "__main__":
    main()
