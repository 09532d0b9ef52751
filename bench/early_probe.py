"""First GPU call: environment, lever micro-benchmarks and the diffusers peer at 48,832 tokens."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch

from bench import levers, peer
from bench.measure import host_peak_rss_gib

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
out = Path(os.environ.get("OUT", "."))
results: dict = {"torch": torch.__version__, "device": torch.cuda.get_device_name(), "cc": torch.cuda.get_device_capability()}
results["linear"] = levers.linear_variants()
print(json.dumps(results["linear"], indent=1), flush=True)
results["attention"] = levers.attention_variants()
print(json.dumps(results["attention"], indent=1), flush=True)
if "--no-peer" not in sys.argv:
    model = peer.build_peer()
    results["peer_bf16_b1"] = peer.bench_peer(model, batch=1)
    results["peer_bf16_b2"] = peer.bench_peer(model, batch=2)
    print(results["peer_bf16_b1"], results["peer_bf16_b2"], flush=True)
    peer.quantize_int8(model)
    torch.cuda.empty_cache()
    results["peer_int8_b2"] = peer.bench_peer(model, batch=2)
    results["host_peak_rss_gib"] = host_peak_rss_gib()
(out / "early_probe.json").write_text(json.dumps(results, indent=1))
print(json.dumps({k: v for k, v in results.items() if k.startswith("peer")}, indent=1))
