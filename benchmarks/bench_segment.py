"""Speed of the segment task, as ratios measured side by side in one process on the same data.

1. Training throughput of trainbench (the fastai Learner with every standard callback of a segment run: run writer,
   plateau scheduler, early stopping, TensorBoard, gradient clipping, the segment epoch log and the IoU/Dice metrics)
   against a minimal hand-written PyTorch loop with the same model, loss, optimizer, gradient clipping and dataset.
   Goal: >= 0.97. Ratio = hand-written seconds / trainbench seconds per training epoch: the median over interleaved
   epoch pairs after a warm-up, with its spread (timers.interleaved), the same torch thread count on both sides.
2. The text-embedding cache: training steps with the prompts' CLIP text embeddings read from the model's buffer
   (as trainbench trains) against encoding the batch's prompts with the CLIP text tower every step.
3. bf16 autocast on the CPU (trainbench's CPUMixedPrecision) against fp32, per training step.

The model is CLIPSeg on a random CLIP (the tiny ViT by default; --clip ViT-B-16 for the reference's size, slower).
Run: .venv/bin/python benchmarks/bench_segment.py [--clip ViT-B-16 --img-size 352] [--rounds 5] [--smoke]
"""
import argparse, logging, statistics, tempfile, time
from pathlib import Path

import torch

from trainbench.config import load_config
from trainbench.core import log_to_console
from trainbench.task import get_task
from trainbench.learner import CPUMixedPrecision, StopTraining, build_learner, get_device, training_callbacks
from trainbench.tasks.segment import BCEDiceLoss
from report import ratio
from timers import PhaseTimer, StepTimer, describe, interleaved, pin_threads, ratio_stats

GOAL = 0.97


def setup(root, clip, img_size, bs, extra=None):
    over = {'data.root_dir': str(root), 'data.img_size': img_size, 'data.num_workers': 0, 'training.batch_size': bs,
            'model.clip_model': clip, 'model.pretrained': False, **({'model.extract_layers': [3, 6, 9], 'model.decoder_ff': 2048}
                                                                     if clip != 'tiny-vit' else {}), **(extra or {})}
    cfg = load_config('segment/quick', over)
    task = get_task('segment')
    return cfg, task, task.data(cfg, get_device('cpu'))


def throughput_ratio(root, clip, img_size, bs, rounds, warmup=1, extra=None):
    cfg, task, data = setup(root, clip, img_size, bs, extra)
    n = len(data.dls.train.dataset)
    torch.manual_seed(0)
    learn = build_learner(task, cfg, data, task.model(cfg, data), path=tempfile.mkdtemp())
    learn.add_cb(StopTraining())
    timer, run_dir = PhaseTimer(), Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    model = task.model(cfg, data)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.training.lr,
                            weight_decay=cfg.training.weight_decay, fused=True)
    loss_fn = BCEDiceLoss(cfg.training.bce_weight, cfg.training.dice_weight)
    dl = torch.utils.data.DataLoader(data.dls.train.dataset, batch_size=bs, shuffle=True, drop_last=data.dls.train.drop_last)
    def pipeline():
        learn.fit(1, cfg.training.lr, cbs=training_callbacks(task, cfg, run_dir, data.info) + [timer])
        return timer.train_s[-1]
    def plain():
        t0 = time.perf_counter()
        model.train()
        for x, p, y in dl:
            loss = loss_fn(model(x, p), y)
            opt.zero_grad(); loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.grad_clip)
            opt.step()
        return time.perf_counter() - t0
    secs = interleaved({'trainbench': pipeline, 'plain': plain}, rounds, warmup)
    st = ratio_stats(secs['plain'], secs['trainbench'])
    tb, hw = statistics.median(secs['trainbench']), statistics.median(secs['plain'])
    print(f'CLIPSeg on {clip}, {img_size}px bs{bs}, {n} training images, {rounds} interleaved epoch pairs after {warmup} warm-up, '
          f'{torch.get_num_threads()} threads: trainbench {n/tb:.1f} img/s, hand-written loop {n/hw:.1f} img/s (median epochs); '
          f'ratio {describe(st)}  (goal >= {GOAL})')
    ratio(f'segment training throughput (CLIPSeg on {clip}, {img_size}px bs{bs})', 'minimal PyTorch loop, same model, loss, optimizer, clipping',
          st['median'], GOAL, unit='', note=f"median of {rounds} interleaved epoch pairs, spread {st['min']:.3f}-{st['max']:.3f}, "
          f"{torch.get_num_threads()} threads on both sides: {n/tb:.1f} against {n/hw:.1f} img/s")
    return st


def step_times(learn, steps):
    timer = StepTimer()
    learn.fit(1, 1e-4, cbs=[timer])
    return timer.times[2:] or timer.times[-1:]   # the first steps warm up (a smoke run has fewer)


def text_cache_speedup(root, clip, img_size, bs, extra=None):
    cfg, task, data = setup(root, clip, img_size, bs, extra)
    times = {}
    for mode in ['cached', 'encoded', 'cached', 'encoded']:
        torch.manual_seed(0)
        model = task.model(cfg, data)
        model.cache_text = mode == 'cached'
        learn = build_learner(task, cfg, data, model, path=tempfile.mkdtemp())
        times.setdefault(mode, []).extend(step_times(learn, 0))
    c, e = min(times['cached']), min(times['encoded'])
    print(f'{clip} {img_size}px bs{bs}: text embeddings cached {c*1000:6.0f} ms/step, encoded every step {e*1000:6.0f} ms/step, '
          f'speed-up {e/c:.2f}x')
    ratio(f'segment text embeddings cached ({clip} {img_size}px bs{bs})', 'encoding the prompts every step', e/c)


def bf16_speedup(root, clip, img_size, bs, extra=None):
    cfg, task, data = setup(root, clip, img_size, bs, extra)
    times = {}
    for mode in ['fp32', 'bf16', 'fp32', 'bf16']:
        torch.manual_seed(0)
        learn = build_learner(task, cfg, data, task.model(cfg, data), path=tempfile.mkdtemp())
        if mode == 'bf16': learn.add_cb(CPUMixedPrecision())
        times.setdefault(mode, []).extend(step_times(learn, 0))
    f, b = min(times['fp32']), min(times['bf16'])
    print(f'{clip} {img_size}px bs{bs}: fp32 {f*1000:6.0f} ms/step, bf16 autocast {b*1000:6.0f} ms/step, speed-up {f/b:.2f}x')
    ratio(f'CPU bf16 autocast training step (CLIPSeg on {clip}, {img_size}px bs{bs})', 'fp32 step', f/b,
          note=f'fp32 {f*1000:.0f} ms/step, bf16 {b*1000:.0f} ms/step')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--clip', default='tiny-vit', help="open_clip model of the backbone (random weights)")
    p.add_argument('--img-size', type=int, default=96)
    p.add_argument('--bs', type=int, default=16)
    p.add_argument('--rounds', type=int, default=5, help='interleaved epoch pairs timed (after one warm-up)')
    p.add_argument('--threads', type=int, help="torch threads on both sides (default: torch's choice)")
    p.add_argument('--n', type=int, default=40, help='synthetic training images per dataset')
    p.add_argument('--smoke', action='store_true', help='a few seconds: tiny data, 32 px, 1 round after the warm-up (the test suite runs it)')
    a = p.parse_args(argv)
    log_to_console().setLevel(logging.WARNING)
    pin_threads(a.threads or (1 if a.smoke else None))   # smoke: one thread, so that a busy machine does not oversubscribe
    if a.smoke: a.n, a.img_size, a.bs, a.rounds = 6, 32, 4, 1
    extra = {'model.decoder_ff': 64} if a.smoke else None
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    root = get_task('segment').synth(Path(tempfile.mkdtemp())/'walls', n=a.n, seed=0)
    print('\n1. Training throughput, trainbench / hand-written PyTorch loop')
    throughput_ratio(root, a.clip, a.img_size, a.bs, a.rounds, extra=extra)
    print('\n2. Text-embedding cache (training steps)')
    text_cache_speedup(root, a.clip, a.img_size, a.bs, extra)
    print('\n3. CPU bf16 autocast speed-up over fp32 (training steps)')
    bf16_speedup(root, a.clip, a.img_size, a.bs, extra)


if __name__ == '__main__': main()
