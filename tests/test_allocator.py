"""util.allocator: a 480p frame's freed activations stay in the process instead of being faulted in again."""
import os
import platform
import subprocess
import sys
import textwrap

import pytest

from util.allocator import keep_freed_activations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Query encoder + decoder of a 480x864 frame, 4 times; prints the page faults of each frame.
FAULTS_PER_FRAME = textwrap.dedent('''
    import resource, sys
    import torch
    from model.checkpoint import build_network
    from model.inference_mode import optimize_for_inference
    from util.allocator import keep_freed_activations
    if sys.argv[2] == 'kept':
        assert keep_freed_activations()
    net = optimize_for_inference(build_network(sys.argv[1]))
    frame = torch.randn(1, 3, 480, 864).contiguous(memory_format=torch.channels_last)
    readout = torch.randn(1, 1024, 30, 54).contiguous(memory_format=torch.channels_last)
    faults = []
    with torch.inference_mode():
        for _ in range(4):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            f16, f8, f4 = net.encode_query(frame)
            net.segment(readout, f8, f4)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(*faults)
''')


def faults_per_frame(checkpoint, mode):
    out = subprocess.run([sys.executable, '-c', FAULTS_PER_FRAME, str(checkpoint), mode], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return [int(n) for n in out.split()]


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason="the thresholds are glibc malloc's")
def test_later_frames_reuse_the_freed_activations(synthetic_checkpoint):
    mb = 2**20 // 4096  # pages per MB
    default = faults_per_frame(synthetic_checkpoint, 'default')
    kept = faults_per_frame(synthetic_checkpoint, 'kept')
    assert min(default[2:]) > 40 * mb    # glibc hands the memory back and faults it in every frame
    assert max(kept[2:]) < 1 * mb        # the first frames' memory is reused


def test_reports_whether_it_applied():
    assert keep_freed_activations() is (platform.libc_ver()[0] == 'glibc')
