#!/bin/sh
# The GPU acceptance run (docs/gpu.md): golden clips on CUDA in fp32 and fp16, NCCL training past
# two reports, a torchrun evaluation against one process, the inference benchmark's FPS.
# Needs one CUDA device, no download; a few minutes. Extra arguments go to pytest.
cd "$(dirname "$0")/.." || exit 1
exec python -m pytest -m gpu -s -rs -q "$@"
