"""The paper's quality-aware memory policy, driven with scripted quality scores."""
import math

import pytest
import torch

from inference_memory_bank import MemoryBank, memory_summary


def kv(frame, objects=1):
    """Tiny key/value tensors whose content identifies the frame."""
    key = torch.full((objects, 2, 1, 1, 1), float(frame))
    return key, key.clone()


def run(bank, qualities, start=1):
    """Offers frames start, start+1, ... with the scripted qualities; returns the decisions."""
    decisions = []
    for t, q in enumerate(qualities, start):
        decisions.append(bank.offer(t, *kv(t), (0,), q))
    return decisions


def test_mem_freq_and_quality_gate():
    bank = MemoryBank(mem_freq=5, quality_thr=0.8, capacity=20)
    bank.add_permanent(0, *kv(0), (0,))
    # frame 5 is due but poor; 6 is due and good; then 11 is the next due frame
    qualities = {5: 0.5, 6: 0.9, 11: 0.81}
    decisions = run(bank, [qualities.get(t, 1.0) for t in range(1, 13)])
    reasons = {t: d.reason for t, d in enumerate(decisions, 1)}
    assert [t for t, r in reasons.items() if r == 'stored'] == [6, 11]
    assert reasons[5] == 'low_quality'
    assert all(reasons[t] == 'not_due' for t in (1, 2, 3, 4, 7, 8, 9, 10, 12))
    assert [e.frame for e in bank.permanent + bank.stored] == [0, 6, 11]


def test_gate_is_strictly_greater():
    bank = MemoryBank(mem_freq=1, quality_thr=0.8, capacity=20)
    bank.add_permanent(0, *kv(0), (0,))
    assert not bank.offer(1, *kv(1), (0,), 0.8).stored
    assert bank.offer(2, *kv(2), (0,), 0.8001).stored


def test_temporary_entry_is_the_previous_unstored_frame():
    bank = MemoryBank(mem_freq=3, quality_thr=0.5, capacity=20)
    bank.add_permanent(0, *kv(0), (0,))
    bank.offer(1, *kv(1), (0,), 1.0)
    assert bank.frames() == [0, 1]
    bank.offer(2, *kv(2), (0,), 1.0)
    assert bank.frames() == [0, 2]          # frame 1 is gone, 2 is the temporary
    bank.offer(3, *kv(3), (0,), 1.0)        # stored: no temporary any more
    assert bank.frames() == [0, 3]
    key, value = bank.read_tensors(0)
    assert key.shape == (1, 2, 2, 1, 1)
    assert key[0, 0, :, 0, 0].tolist() == [0.0, 3.0]


def expected_victim(bank, count):
    costs = [math.exp(-abs(count - e.order)) + e.quality for e in bank.stored]
    return bank.stored[costs.index(min(costs))].frame


def test_capacity_evicts_the_chosen_entry_and_never_the_first_frame():
    capacity = 3
    bank = MemoryBank(mem_freq=1, quality_thr=0.0, capacity=capacity)
    bank.add_permanent(0, *kv(0), (0,))
    # first frame scored far below the rest: a buggy eviction would drop it
    qualities = [0.9, 0.2, 0.95, 0.99, 0.3, 0.97, 0.96, 0.98]
    for t, q in enumerate(qualities, 1):
        before = [e.frame for e in bank.stored]
        victim = expected_victim(bank, bank.stored_count + 1) if len(before) > capacity else None
        decision = bank.offer(t, *kv(t), (0,), q)
        after = [e.frame for e in bank.stored]
        assert bank.permanent[0].frame == 0
        if victim is None:
            assert decision.reason == 'stored' and after == before + [t]
        else:
            # exactly the chosen entry leaves, everything else stays
            assert decision.reason == 'replaced' and decision.evicted_frame == victim
            assert sorted(after) == sorted([f for f in before if f != victim] + [t])
        assert len(bank.stored) <= capacity + 1
    # the two poor frames (2: q=0.2, 5: q=0.3) were the first to go
    assert 2 not in [e.frame for e in bank.stored] and 5 not in [e.frame for e in bank.stored]
    key, _ = bank.read_tensors(0)
    assert key[0, 0, 0, 0, 0].item() == 0.0   # the first frame's key is still read first


def test_recent_entries_are_protected_by_the_recency_bonus():
    # equal qualities: the bonus exp(-|n - order|) keeps recent frames, evicts the oldest
    bank = MemoryBank(mem_freq=1, quality_thr=0.0, capacity=2)
    bank.add_permanent(0, *kv(0), (0,))
    decisions = run(bank, [0.9] * 5)
    assert [d.evicted_frame for d in decisions if d.reason == 'replaced'] == [1, 2]
    assert [e.frame for e in bank.stored] == [3, 4, 5]


def test_per_object_entries_for_objects_entering_later():
    bank = MemoryBank(mem_freq=5, quality_thr=0.75, capacity=10)
    bank.add_permanent(0, *kv(0, objects=1), (1,))
    bank.add_permanent(5, *kv(5, objects=2), (1, 2))
    assert bank.read_tensors(1)[0].shape[2] == 2
    assert bank.read_tensors(2)[0].shape[2] == 1
    with pytest.raises(KeyError):
        bank.read_tensors(3)


def test_recent_policy_stores_every_due_frame_and_evicts_the_oldest():
    """The long-video baseline: no quality gate, the most recent frames kept, the first frame never evicted."""
    bank = MemoryBank(mem_freq=2, quality_thr=0.8, capacity=2, policy='recent')
    bank.add_permanent(0, *kv(0), (0,))
    decisions = run(bank, [0.1] * 10)            # every score far below the gate
    assert [d.reason for d in decisions[1::2]] == ['stored'] * 3 + ['replaced'] * 2
    assert [d.evicted_frame for d in decisions[1::2] if d.reason == 'replaced'] == [2, 4]
    assert [e.frame for e in bank.permanent + bank.stored] == [0, 6, 8, 10]

    quality = MemoryBank(mem_freq=2, quality_thr=0.8, capacity=2)
    quality.add_permanent(0, *kv(0), (0,))
    assert {d.reason for d in run(quality, [0.1] * 10)} == {'not_due', 'low_quality'}
    with pytest.raises(ValueError, match='memory policy'):
        MemoryBank(policy='oldest')


def test_memory_summary_counts_the_decisions_and_the_final_bank():
    bank = MemoryBank(mem_freq=2, quality_thr=0.8, capacity=1)
    bank.add_permanent(0, *kv(0), (0,))
    qualities = [1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0]   # frame 4 is due but poor; 8 is not due
    counts = {'stored': 0, 'replaced': 0, 'not_due': 0, 'low_quality': 0}
    for decision in run(bank, qualities):
        counts[decision.reason] += 1
    assert memory_summary(counts, bank) == (
        'memory: 3 frames stored (1 replacing older ones), 1 rejected by the quality gate, 4 not due '
        '(--mem_freq 2); at the end 4 entries (1 permanent, 2 stored, 1 previous)')
