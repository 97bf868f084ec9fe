"""Timing shared by the benchmarks (imported as `from timers import ...`: scripts run from benchmarks/).

- fastai callbacks that time training (`PhaseTimer`, `StepTimer`);
- `interleaved`: the one way every throughput benchmark compares trainbench's pipeline with a plain PyTorch loop on a
  shared machine. One untimed warm-up round, then rounds of one epoch of each side, the order rotated every round so
  neither side always runs first; the thread count pinned once for both sides and checked after every epoch. Per round
  the ratio plain / pipeline; the figure is the median of the rounds' ratios, with their spread (min, max). Load on a
  shared machine comes and goes within seconds: a pair of adjacent epochs sees nearly the same load, so the ratio of a
  pair keeps far less of it than "the fastest epoch of each side" (whose two minima can come from different minutes).
"""
import statistics, time

import torch
from fastai.callback.core import Callback


class PhaseTimer(Callback):
    "Seconds of each training phase (`train_s`) and each whole training epoch (`epoch_s`, training and validation)."
    order = 100
    def __init__(self): self.train_s, self.epoch_s = [], []
    def before_epoch(self): self.e0, self.trained = time.perf_counter(), False
    def before_train(self): self.t0, self.trained = time.perf_counter(), True
    def after_train(self): self.train_s.append(time.perf_counter() - self.t0)
    def after_epoch(self):   # evaluation after the fit (get_preds) is an epoch without training: not counted
        if self.trained: self.epoch_s.append(time.perf_counter() - self.e0)


class StepTimer(Callback):
    "Seconds of each training batch."
    order = 100
    def before_fit(self): self.times = []
    def before_batch(self): self.t0 = time.perf_counter()
    def after_batch(self):
        if self.training: self.times.append(time.perf_counter() - self.t0)


def pin_threads(n:int=None)->int:
    "Set torch's intra-op thread count (default: what torch chose) once, for every side of a comparison; returns it."
    n = n or torch.get_num_threads()
    torch.set_num_threads(n)
    return n


def interleaved(sides:dict,    # name -> a function that runs one training epoch and returns its seconds
                rounds:int=5,  # timed rounds (pairs when two sides)
                warmup:int=1,  # untimed rounds first: allocator, oneDNN kernels, caches
               )->dict:
    "Seconds of each side's epochs, `name -> [s per round]`, measured in interleaved rounds with a rotating order."
    names, threads = list(sides), torch.get_num_threads()
    out = {n: [] for n in names}
    for r in range(warmup + rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:   # rotate: each side runs first as often as the others
            s = sides[n]()
            if torch.get_num_threads() != threads:
                raise RuntimeError(f'{n} changed torch threads from {threads} to {torch.get_num_threads()}: the sides would not compare')
            if r >= warmup: out[n].append(s)
    return out


def ratio_stats(base:list, other:list)->dict:
    "Per-round ratios base / other (seconds: other's speed relative to base), their median and spread."
    rs = [b/o for b, o in zip(base, other)]
    return dict(median=statistics.median(rs), min=min(rs), max=max(rs), n=len(rs), ratios=rs)


def describe(st:dict)->str:
    "'0.981 (0.95-1.02 over 5 pairs)'"
    return f"{st['median']:.3f} ({st['min']:.3f}-{st['max']:.3f} over {st['n']} pairs)"
