"""Speed of the multilabel task, as ratios measured side by side in one process on the same data.

1. The memory bank's share of a training step: the bank's own work (retrieval, update, and the backward through the
   retrieval), timed alone on features of the training batch's shape, over the memory model's whole training step
   (forward, backward, optimizer step); each the fastest of many repetitions. Goal: <= 5%. Every update strategy is
   measured, with a full bank of the size given. (Subtracting the step time of the model without memory would
   measure the same thing, but on a shared CPU the difference of two noisy step times is mostly noise.)
2. Training throughput of trainbench (the fastai Learner with the run's callbacks: run writer, early stopping, stop
   flag, the task's AUC metric) against a minimal hand-written PyTorch loop on the same memory model, batch size,
   optimizer and dataset (phase 2's: all synthetic films). Goal: >= 0.97. The ratio is hand-written seconds /
   trainbench seconds per training epoch: the median over interleaved epoch pairs after a warm-up, with its spread
   (timers.interleaved), the same torch thread count on both sides.

On a shared CPU these numbers move by several percent from run to run; on CUDA, pass --device cuda.

Run: .venv/bin/python benchmarks/bench_multilabel.py [--model resnet18] [--img-size 64] [--bs 32] [--device cpu] [--rounds 5] [--smoke]
"""
import argparse, statistics, tempfile, time
from pathlib import Path

import torch
from torch import nn

from trainbench.config import load_config
from trainbench.core import log_to_console
from trainbench.task import get_task
from trainbench.learner import StopTraining, build_learner, get_device, training_callbacks
from trainbench.tasks.multilabel import MemoryBank, memory_classifier
from report import ratio
from timers import PhaseTimer as TrainTimer, describe, interleaved, pin_threads, ratio_stats

GOAL = 0.97


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def step_seconds(model, x, y, opt, dev, reps):
    "Fastest seconds of one training step over `reps` steps (after one warm-up)."
    model.train(); ts = []
    for i in range(reps + 1):
        sync(dev); t0 = time.perf_counter()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        sync(dev); ts.append(time.perf_counter() - t0)
    return min(ts[1:])


def memory_share(model_name, img_size, bs, bank_size, dev, reps=10):
    "Per strategy: the bank's own forward and backward, over the fastest training step of the memory model."
    x, y = torch.randn(bs, 3, img_size, img_size, device=dev), torch.randint(0, 2, (bs, 14), device=dev).float()
    print(f'Memory bank share of a training step: {model_name} {img_size}px bs{bs}, bank {bank_size}, {dev}')
    torch.manual_seed(0)
    base = memory_classifier(load_config('multilabel/quick', {'model.name': model_name, 'model.pretrained': False,
                                                              'memory.use_memory': False})).to(dev)
    tn = step_seconds(base, x, y, torch.optim.AdamW(base.parameters(), 1e-3, fused=True), dev, reps)
    print(f'  no memory: step {tn*1000:.1f} ms')
    for strategy in MemoryBank.strategies:
        over = {'model.name': model_name, 'model.pretrained': False, 'memory.bank_size': bank_size, 'memory.update_strategy': strategy}
        torch.manual_seed(0)
        model = memory_classifier(load_config('multilabel/quick', over)).to(dev)
        bank = model.memory.train()
        for _ in range(bank_size//bs + 1): bank(torch.randn(bs, model.backbone.dim, device=dev))   # a full bank, as in training
        tm = step_seconds(model, x, y, torch.optim.AdamW(model.parameters(), 1e-3, fused=True), dev, reps)
        z, tb = torch.randn(bs, model.backbone.dim, device=dev, requires_grad=True), []
        for _ in range(5*reps + 1):   # the bank alone: retrieval, update, and the backward through the retrieval
            sync(dev); t0 = time.perf_counter(); bank(z).sum().backward(); sync(dev); tb.append(time.perf_counter() - t0)
        tb = min(tb[1:])
        print(f'  {strategy:12s} step {tm*1000:7.1f} ms; bank alone {tb*1000:6.2f} ms: share {tb/tm:5.1%} of the step (goal <= 5%)')
        ratio(f'memory-bank share of a training step ({strategy}, bank {bank_size}, {model_name} {img_size}px bs{bs})',
              'the whole training step', tb/tm, 0.05, higher=False, unit='%', note=f'step {tm*1000:.0f} ms, bank {tb*1000:.2f} ms')


def throughput_ratio(root, model_name, img_size, bs, dev, rounds, warmup=1, extra=None):
    over = {'data.root_dir': str(root), 'data.img_size': img_size, 'data.num_workers': 0, 'model.name': model_name,
            'model.pretrained': False, 'phase2.batch_size': bs, 'phase1.batch_size': bs, 'output.tensorboard': False,
            'training.device': str(dev), **(extra or {})}
    cfg = load_config('multilabel/quick', over)
    task = get_task('multilabel')
    data = task.data(cfg, dev)
    dls = data.extra['phases'][2]
    data.dls = dls
    n = len(dls.train.dataset)
    torch.manual_seed(0)
    learn = build_learner(task, cfg, data, task.model(cfg, data), path=tempfile.mkdtemp())
    learn.add_cb(StopTraining())
    timer, run_dir = TrainTimer(), Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    model = task.model(cfg, data).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=cfg.training.weight_decay, fused=True)
    train_dl = torch.utils.data.DataLoader(dls.train.dataset, batch_size=bs, shuffle=True, drop_last=dls.train.drop_last)
    def pipeline():
        learn.fit(1, 1e-3, cbs=training_callbacks(task, cfg, run_dir, data.info) + [timer])
        return timer.train_s[-1]
    def plain():
        sync(dev); t0 = time.perf_counter(); model.train()
        for x, y in train_dl:
            x, y = x.to(dev), y.to(dev)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
        sync(dev); return time.perf_counter() - t0
    secs = interleaved({'trainbench': pipeline, 'plain': plain}, rounds, warmup)
    st = ratio_stats(secs['plain'], secs['trainbench'])
    tb, hw = statistics.median(secs['trainbench']), statistics.median(secs['plain'])
    print(f'Training throughput: {model_name} {img_size}px bs{bs}, {n} films, {rounds} interleaved epoch pairs after {warmup} warm-up, '
          f'{torch.get_num_threads()} threads: trainbench {n/tb:.1f} img/s, hand-written loop {n/hw:.1f} img/s: ratio {describe(st)} (goal >= {GOAL})')
    ratio(f'multilabel training throughput ({model_name} {img_size}px bs{bs}, memory model)', 'minimal PyTorch loop, same model, data, AdamW',
          st['median'], GOAL, unit='', note=f"median of {rounds} interleaved epoch pairs, spread {st['min']:.3f}-{st['max']:.3f}, "
          f"{torch.get_num_threads()} threads on both sides: {n/tb:.0f} against {n/hw:.0f} img/s")
    return st


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='resnet18'); p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--bank-size', type=int, default=512)
    p.add_argument('--device', default='cpu')
    p.add_argument('--rounds', type=int, default=5, help='interleaved epoch pairs timed (after one warm-up)')
    p.add_argument('--threads', type=int, help="torch threads on both sides (default: torch's choice)")
    p.add_argument('--n', type=int, default=400, help='synthetic films')
    p.add_argument('--smoke', action='store_true', help='a few seconds: tiny data, 32 px, 1 round after the warm-up (the test suite runs it)')
    a = p.parse_args(argv)
    log_to_console()
    pin_threads(a.threads or (1 if a.smoke else None))   # smoke: one thread, so that a busy machine does not oversubscribe
    if a.smoke: a.img_size, a.bs, a.bank_size, a.n, a.rounds = 32, 8, 16, 80, 1
    dev = get_device(a.device)
    memory_share(a.model, a.img_size, a.bs, a.bank_size, dev, reps=2 if a.smoke else 10)
    root = get_task('multilabel').synth(Path(tempfile.mkdtemp())/'cxr', a.n, 0)
    throughput_ratio(root, a.model, a.img_size, a.bs, dev, a.rounds, extra={'memory.bank_size': a.bank_size} if a.smoke else None)


if __name__ == '__main__': main()
