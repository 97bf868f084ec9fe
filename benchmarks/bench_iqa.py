"""Speed of the iqa task, measured side by side in one process on the same model and synthetic images.

1. Evaluation: trainbench's batched protocol (each image decoded once, its `val_patch_num` grid crops and those of a few
   other images in one forward) against the reference protocol (one crop per forward, batch size 1, the image decoded
   again for every crop), on the same crops: the SRCC must be identical. Goal: >= 10x faster. Each protocol first runs
   once over every batch shape it uses (oneDNN builds kernels per shape), then the fastest of two passes counts.
   trainbench's evaluation runs the model with its batch norms folded into the convolutions (`fold_batchnorm`), as
   `evaluate` and `predict` do; the reference runs it as trained. Also: the same batched evaluation not folded, and the
   ceiling: the model's own forward time per crop, without any data path.
2. Training throughput of the fastai pipeline (the task's Learner with its callbacks: the LR schedule, train SRCC/PLCC,
   the run writer) against a plain PyTorch loop (same model, data, Adam groups and L1 loss). Goal: >= 0.97. The median
   over interleaved epoch pairs after a warm-up, with its spread (timers.interleaved), one thread count on both sides.

By default the reduced CPU model of `iqa/quick` (64-px patches); `--paper` uses the paper's ResNet-50 HyperNet on
224-px patches (random weights), for a GPU.

Run: .venv/bin/python benchmarks/bench_iqa.py [--paper] [--refs N] [--rounds 5] [--smoke]
"""
import argparse, logging, shutil, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback

from trainbench.core import log_to_console
from trainbench.task import get_task
from trainbench.config import load_config
from trainbench.readers.iqa import CropsDataset, ImageStore, _normalize, grid_positions, load_resized, synth_kadid
from trainbench.learner import build_learner, get_device, training_callbacks
from trainbench.tasks.iqa import LRSchedule, eval_images_per_batch, fold_batchnorm, srcc
from report import ratio
from timers import describe, interleaved, pin_threads, ratio_stats

GOAL = 0.97


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def reference_eval(model, files, n, p, size, dev, decode_per_crop=True):
    """The reference protocol: every (image, crop) is its own item, one forward of batch size 1. The reference's dataset
    opens and resizes the file for every item (`decode_per_crop`); without it, each image is decoded once and only the
    forwards are one crop at a time."""
    scores = []
    with torch.inference_mode():
        for f in files:
            img, s = load_resized(f, size, p), []
            for i in range(n):
                if decode_per_crop: img = load_resized(f, size, p)
                t, l = grid_positions(*img.shape[1:], p, n)[i]
                s.append(model(_normalize(img[:, t:t+p, l:l+p])[None].to(dev)).float().item())
            scores.append(np.mean(s))
    return np.array(scores)


def batched_eval(model, files, n, p, size, dev, images_per_batch):
    "trainbench's protocol: decode each image once, the crops of `images_per_batch` images in one forward."
    ds = CropsDataset(ImageStore(files, size, p, preload=False), None, n, p)
    dl = torch.utils.data.DataLoader(ds, batch_size=images_per_batch, num_workers=0)
    with torch.inference_mode(): return torch.cat([model(x.to(dev)).float().cpu() for x in dl]).numpy()


def timed(f, dev):
    sync(dev); t0 = time.perf_counter(); r = f(); sync(dev)
    return r, time.perf_counter() - t0


def forward_per_crop(model, crops, dev, reps):
    "Seconds per crop of the model's forward alone on one batch of `crops` (no data path): the ceiling of any evaluation."
    with torch.inference_mode():
        model(crops)   # warm up this shape
        return min(timed(lambda: model(crops), dev)[1] for _ in range(reps)) / len(crops)


def evaluation(cfg, root, dev, n_images, reps=2):
    task = get_task('iqa')
    files = sorted((root/'images').glob('R*_*_*.png'))[:n_images]
    dmos = pd.read_csv(root/'dmos.csv').set_index('dist_img').dmos
    targets = dmos[[f.name for f in files]].to_numpy()
    torch.manual_seed(0)
    model = task.model(cfg, None).to(dev, memory_format=torch.channels_last).eval()   # the layout iqa runs use (fast_paths)
    folded = fold_batchnorm(model)   # what trainbench's evaluate and predict run
    d = cfg.data
    n, p, bs = d.val_patch_num, d.patch_size, eval_images_per_batch(cfg)
    # warm up: oneDNN builds its kernels once per input shape, so each protocol first sees every batch shape it will use
    batched_eval(folded, files, n, p, d.resize, dev, bs); batched_eval(model, files, n, p, d.resize, dev, bs)
    reference_eval(model, files[:1], 2, p, d.resize, dev)
    best = lambda f: min((timed(f, dev) for _ in range(reps)), key=lambda r: r[1])   # the fastest of `reps` passes each
    ref, t_ref = best(lambda: reference_eval(model, files, n, p, d.resize, dev))
    ref1, t_ref1 = best(lambda: reference_eval(model, files, n, p, d.resize, dev, decode_per_crop=False))
    unf, t_unf = best(lambda: batched_eval(model, files, n, p, d.resize, dev, bs))
    ours, t_ours = best(lambda: batched_eval(folded, files, n, p, d.resize, dev, bs))
    crops = torch.randn(min(bs, len(files))*n, 3, p, p, device=dev)
    fwd, fwd_unf, fwd1 = forward_per_crop(folded, crops, dev, reps), forward_per_crop(model, crops, dev, reps), forward_per_crop(model, crops[:1], dev, reps)
    n_crops = len(files)*n
    s_ref, s_ours, s_unf = srcc(ref, targets), srcc(ours, targets), srcc(unf, targets)
    print(f'{len(files)} images x {n} crops of {p} px, batched: {bs} images = {bs*n} crops per forward, batch norm folded: {t_ours:.2f} s '
          f'({t_ours/n_crops*1000:.2f} ms/crop); not folded {t_unf:.2f} s: folding is {t_unf/t_ours:.2f}x faster '
          f'({"folded" if folded is not model else "NOT folded: scores differed"})')
    print(f'  reference protocol (bs 1, the image decoded per crop as its dataset does): {t_ref:.2f} s: batched is {t_ref/t_ours:.1f}x faster  (goal >= 10x)')
    print(f'  bs 1 with each image decoded once (the forwards alone):                    {t_ref1:.2f} s: batched is {t_ref1/t_ours:.1f}x faster')
    print(f'  ceiling: the forward alone, {len(crops)} crops per batch: {fwd*1000:.2f} ms/crop folded, {fwd_unf*1000:.2f} not folded; '
          f'batch 1: {fwd1*1000:.2f} ms/crop. The reference protocol over the folded forward alone: at most {t_ref/(fwd*n_crops):.1f}x')
    print(f'  SRCC reference {s_ref:.6f}, batched folded {s_ours:.6f}, not folded {s_unf:.6f}, identical: {s_ref == s_ours == s_unf} '
          f'(largest score difference {np.abs(ref - ours).max():.2e}, same ranking: {(np.argsort(ref) == np.argsort(ours)).all()})')
    ratio(f'batched {n}-crop evaluation ({len(files)} images, {p} px)', 'reference protocol: one crop per forward, bs 1, image decoded per crop',
          t_ref/t_ours, 10, note=f'SRCC identical: {s_ref == s_ours}; batch norm folded into the convolutions ({t_unf/t_ours:.2f}x over not folded); '
          f'against batch-1 forwards alone (each image decoded once) {t_ref1/t_ours:.1f}x. Ceiling: the folded forward alone takes '
          f'{fwd*1000:.2f} ms per crop in batches of {len(crops)} (batch 1: {fwd1*1000:.2f} ms), so no batched evaluation can beat the '
          f'reference protocol by more than {t_ref/(fwd*n_crops):.1f}x here' + ('; on this CPU the forward is compute-bound (oneDNN '
          'convolutions), so batching saves little per crop; on a GPU it removes per-call overhead, most of a batch-1 forward' if dev.type == 'cpu' else ''))
    ratio(f'batch norm folded into the convolutions, batched {n}-crop evaluation', 'the same evaluation, batch norm as trained',
          t_unf/t_ours, note=f'{t_ours:.2f} s against {t_unf:.2f} s; scores equal to 1e-5 (checked on a probe batch each time it folds)')


def training(cfg, root, dev, rounds=5, warmup=1):
    """Seconds of a training epoch (training phase only) of the pipeline and of a plain loop, in interleaved rounds after a
    warm-up (timers.interleaved); returns {'trainbench': [s...], 'plain': [s...]} and the epoch's patches."""
    task = get_task('iqa')
    out = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    data = task.data(cfg, dev)
    learn = build_learner(task, cfg, data, task.model(cfg, data), path=out)
    t = cfg.training
    timer = TrainTimer(dev)
    cbs = [LRSchedule(t.lr, t.lr_ratio), timer, *training_callbacks(task, cfg, out, data.info)]
    torch.manual_seed(0)
    model = task.model(cfg, data).to(dev, memory_format=torch.channels_last)   # the pipeline's layout
    groups = task.splitter(model)
    opt = torch.optim.Adam([{'params': groups[0], 'lr': t.lr}, {'params': groups[1], 'lr': t.lr*t.lr_ratio}],
                           weight_decay=t.weight_decay, fused=True)
    nw = data.dls.train.num_workers   # the same loader settings as the pipeline's: workers kept alive between epochs
    dl = torch.utils.data.DataLoader(data.dls.train.dataset, batch_size=t.batch_size, shuffle=True, num_workers=nw,
                                     persistent_workers=nw > 0, drop_last=data.dls.train.drop_last)
    def plain_epoch():
        model.train()
        for x, y in dl:
            loss = F.l1_loss(model(x.to(dev)), y.to(dev))
            opt.zero_grad(); loss.backward(); opt.step()
    def pipeline(): learn.fit(1, t.lr, cbs=cbs); return timer.seconds[-1]
    secs = interleaved({'trainbench': pipeline, 'plain': lambda: timed(plain_epoch, dev)[1]}, rounds, warmup)
    shutil.rmtree(out)
    return secs, len(data.dls.train.dataset)


class TrainTimer(Callback):
    "Seconds of each epoch's training phase."
    def __init__(self, dev): self.dev, self.seconds = dev, []
    def before_train(self): sync(self.dev); self.t0 = time.perf_counter()
    def after_train(self): sync(self.dev); self.seconds.append(time.perf_counter() - self.t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--paper', action='store_true', help="the paper's ResNet-50 HyperNet at 224 px (use a GPU)")
    p.add_argument('--refs', type=int, default=6, help='synthetic reference images (35 distorted images each)')
    p.add_argument('--images', type=int, default=24, help='images in the evaluation comparison')
    p.add_argument('--rounds', type=int, default=5, help='interleaved training epoch pairs timed (after one warm-up)')
    p.add_argument('--threads', type=int, help="torch threads on both sides (default: torch's choice)")
    p.add_argument('--smoke', action='store_true', help='a few seconds: 3 reference images, 4 images evaluated, 1 round after the warm-up (the test suite runs it)')
    a = p.parse_args(argv)
    log_to_console().setLevel(logging.WARNING)
    pin_threads(a.threads or (1 if a.smoke else None))   # smoke: one thread, so that a busy machine does not oversubscribe
    if a.smoke: a.refs, a.images, a.rounds = 3, 4, 1   # 3 references: one each for train, val and test (the split is by reference)
    tmp = Path(tempfile.mkdtemp())
    size = (512, 384) if a.paper else (128, 96)
    root = synth_kadid(tmp/'kadid', a.refs, seed=0, size=size)
    over = {'data.root_dir': str(root), 'output.tensorboard': False, 'model.pretrained': False}
    if a.paper: over.update({'model.name': 'resnet50', 'model.width': 64, 'data.patch_size': 224, 'data.val_patch_num': 25,
                             'data.train_patch_num': 4, 'training.batch_size': 96, 'model.lda_out': 16, 'model.hyper_in': 112,
                             'model.target_in': 224, 'model.f1': 112, 'model.f2': 56, 'model.f3': 28, 'model.f4': 14})
    else: over.update({'data.val_patch_num': 25})
    if a.smoke: over.update({'data.train_patch_num': 1, 'data.num_workers': 0})
    cfg = load_config('iqa/quick', over)
    dev = get_device('auto')
    print(f'torch {torch.__version__}, device {dev}, {torch.get_num_threads()} threads, '
          f"{'paper HyperNet (ResNet-50, 224 px)' if a.paper else 'iqa/quick model (ResNet-18 width 16, 64 px)'}")
    print('\n1. Batched 25-crop evaluation against the reference protocol')
    evaluation(cfg, root, dev, a.images, reps=1 if a.smoke else 2)
    print('\n2. Training throughput: the fastai pipeline against a plain PyTorch loop, interleaved epochs')
    secs, n = training(cfg, root, dev, a.rounds)
    for i, (pipe, plain) in enumerate(zip(secs['trainbench'], secs['plain'])):
        print(f'  round {i+1}: {n} patches, pipeline {pipe:.2f} s, plain loop {plain:.2f} s: ratio {plain/pipe:.3f}')
    st = ratio_stats(secs['plain'], secs['trainbench'])
    pipe, plain = (float(np.median(secs[k])) for k in ('trainbench', 'plain'))
    print(f'  median epochs: pipeline {n/pipe:.1f} patches/s, plain loop {n/plain:.1f} patches/s; ratio {describe(st)}  (goal >= {GOAL})')
    ratio('iqa training throughput (fastai pipeline)', 'plain PyTorch loop, same model, data, optimizer', st['median'], GOAL, unit='',
          note=f"median of {st['n']} interleaved epoch pairs, spread {st['min']:.3f}-{st['max']:.3f}, {torch.get_num_threads()} threads "
               f"on both sides: pipeline {n/pipe:.0f} patches/s, plain {n/plain:.0f} patches/s")
    shutil.rmtree(tmp)


if __name__ == '__main__': main()
