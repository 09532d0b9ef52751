#!/usr/bin/env bash
# The GPU benchmark, in stages that each fit one 10-minute device call. On the GPU host:
#   bash bench/h100.sh build engine1      # then, while the machine is warm:
#   bash bench/h100.sh engine4 peer       # and: bash bench/h100.sh fidelity pose
# Wheels the host lacks (mmgp, optimum-quanto, diffusers, transformers, ...) travel in .whl/.
# Every stage writes bench-<stage>.json under $OUT (or ./build/bench).
set -euo pipefail
out=${OUT:-build/bench}
volume=${SCAIL_BENCH_VOLUME:-build/volume-full}
mkdir -p "$out"
if [ -d .whl ] && [ ! -d /tmp/site ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  # Bytecode now, on every core, as an image's install has it: else a host's first run compiles it mid cold start.
  python3 -m compileall -q -j 0 /tmp/site > /dev/null || true
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    build-dit) [ -f "$volume/wan2.1_scail_preview_14B_quanto_bf16_int8.safetensors" ] || python3 -c "from tools.volume.dit_file import write_dit_file; write_dit_file('$volume', 'full')" ;;
    build)    [ -f "$volume/Wan2.1_VAE.pth" ] || python3 -m bench.run build --volume "$volume" --out "$out/bench-build.json" ;;
    engine1)  python3 -m bench.run engine --volume "$volume" --profile 1 --out "$out/bench-engine1.json" ;;
    engine1-setup) python3 -m bench.run engine --volume "$volume" --profile 1 --steps 2 --profile-setup --out "$out/bench-engine1-setup.json" ;;
    engine1-sdpa) python3 -m bench.run engine --volume "$volume" --profile 1 --attention sdpa --out "$out/bench-engine1-sdpa.json" ;;
    engine1-eager) python3 -m bench.run engine --volume "$volume" --profile 1 --compile off --out "$out/bench-engine1-eager.json" ;;
    engine1-nopin) python3 -m bench.run engine --volume "$volume" --profile 1 --pin-memory off --out "$out/bench-engine1-nopin.json" ;;
    engine4-setup) python3 -m bench.run engine --volume "$volume" --profile 4 --steps 2 --profile-setup --out "$out/bench-engine4-setup.json" ;;
    cold1)    python3 -m bench.run engine --volume "$volume" --profile 1 --steps 0 --out "$out/bench-cold1.json" ;;
    cold4)    python3 -m bench.run engine --volume "$volume" --profile 4 --steps 0 --out "$out/bench-cold4.json" ;;
    worker1)  python3 -m bench.run worker --volume "$volume" --profile 1 --out "$out/bench-worker1.json" ;;
    worker4)  python3 -m bench.run worker --volume "$volume" --profile 4 --out "$out/bench-worker4.json" ;;
    engine4)  python3 -m bench.run engine --volume "$volume" --profile 4 --out "$out/bench-engine4.json" ;;
    engine4-eager) python3 -m bench.run engine --volume "$volume" --profile 4 --compile off --out "$out/bench-engine4-eager.json" ;;
    peer)     python3 -m bench.run peer --volume "$volume" --out "$out/bench-peer.json" ;;
    fidelity) python3 -m bench.run fidelity --volume "$volume" --out "$out/bench-fidelity.json" ;;
    fidelity-8bit) python3 -m bench.run fidelity --volume "$volume" --variants int8-compile,fp8-linear,fp8-attention,fast --out "$out/bench-fidelity-8bit.json" ;;
    fidelity-emulate) python3 -m bench.run fidelity --volume "$volume" --variants int8-compile-emulate,fp8-attention-emulate,fast-emulate --out "$out/bench-fidelity-emulate.json" ;;
    fidelity-int8) python3 -m bench.run fidelity --volume "$volume" --variants int8-compile-emulate,int8-gemm-emulate,fp8-attention-emulate,int8-gemm-fp8-attention-emulate --out "$out/bench-fidelity-int8.json" ;;
    fidelity-int8-fp8) python3 -m bench.run fidelity --volume "$volume" --variants int8-gemm-fp8-attention-emulate --out "$out/bench-fidelity-int8-fp8.json" ;;
    fidelity-default) python3 -m bench.run fidelity --volume "$volume" --variants fp8-attention-emulate,int8-gemm-fp8-attention-emulate --out "$out/bench-fidelity-default.json" ;;
    dit-mmgp-int8) python3 -m bench.dit_under_mmgp --volume "$volume" --gemm int8 --out "$out/bench-dit-mmgp-int8.json" ;;
    dit-mmgp-int8-own) python3 -m bench.dit_under_mmgp --volume "$volume" --gemm int8 --own-compile --out "$out/bench-dit-mmgp-int8-own.json" ;;
    dit-mmgp-bf16) python3 -m bench.dit_under_mmgp --volume "$volume" --gemm bf16 --out "$out/bench-dit-mmgp-bf16.json" ;;
    engine1-int8) python3 -m bench.run engine --volume "$volume" --profile 1 --gemm int8 --out "$out/bench-engine1-int8.json" ;;
    engine4-int8) python3 -m bench.run engine --volume "$volume" --profile 4 --gemm int8 --out "$out/bench-engine4-int8.json" ;;
    read-probe) python3 -m bench.read_probe --volume "$volume" --out "$out/bench-read-probe.json" ;;
    pin-probe) python3 -m bench.pin_probe --out "$out/bench-pin-probe.json" ;;
    start-probe) python3 -m bench.start_probe --volume "$volume" --out "$out/bench-start-probe.json" ;;
    engine1-warm-libs) python3 -m bench.run engine --volume "$volume" --profile 1 --evict weights --out "$out/bench-engine1-warm-libs.json" ;;
    engine4-warm-libs) python3 -m bench.run engine --volume "$volume" --profile 4 --evict weights --out "$out/bench-engine4-warm-libs.json" ;;
    fidelity-seeds) for st in "1 300" "2 950"; do set -- $st
        python3 -m bench.run fidelity --volume "$volume" --variants int8-gemm-fp8-attention-emulate --seed "$1" --timestep "$2" --out "$out/bench-fidelity-seed$1.json"; done ;;
    gpu-tests) python3 -m pytest -q -m gpu tests/common tests/wan2gp_integration tests/pose/test_renderer.py -o addopts="" -W ignore ;;
    gpu-tests-8bit) python3 -m pytest -q -m gpu tests/wan2gp_integration/test_int8_gemm.py tests/wan2gp_integration/test_8bit.py -o addopts="" -W ignore ;;
    engine1-fast) python3 -m bench.run engine --volume "$volume" --profile 1 --attention fp8 --gemm fp8 --out "$out/bench-engine1-fast.json" ;;
    engine4-fast) python3 -m bench.run engine --volume "$volume" --profile 4 --attention fp8 --gemm fp8 --out "$out/bench-engine4-fast.json" ;;
    sweep)    python3 -m bench.attention_sweep --out "$out/bench-sweep.json" ;;
    sweep-gemm) python3 -m bench.attention_sweep --skip-attention --out "$out/bench-sweep-gemm.json" ;;
    sweep-attention) python3 -m bench.attention_sweep --skip-linear --out "$out/bench-sweep-attention.json" ;;
    pose)     python3 -m bench.pose_bench --volume "$volume" --out "$out/bench-pose.json" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
