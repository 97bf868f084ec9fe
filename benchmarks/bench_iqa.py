"""Speed of the iqa task, measured side by side in one process on the same model and synthetic images.

1. Evaluation: trainbench's batched protocol (each image decoded once, its `val_patch_num` grid crops and those of a few
   other images in one forward) against the reference protocol (one crop per forward, batch size 1, the image decoded
   again for every crop), on the same crops: the SRCC must be identical. Goal: >= 10x faster.
2. Training throughput of the fastai pipeline (the task's Learner with its callbacks: the LR schedule, train SRCC/PLCC,
   the run writer) against a plain PyTorch loop (same model, data, Adam groups and L1 loss). Goal: >= 0.95.

By default the reduced CPU model of `iqa/quick` (64-px patches); `--paper` uses the paper's ResNet-50 HyperNet on
224-px patches (random weights), for a GPU.

Run: .venv/bin/python benchmarks/bench_iqa.py [--paper] [--refs N]
"""
import argparse, logging, shutil, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from fastai.callback.core import Callback

from trainbench.core import get_task, log_to_console
from trainbench.config import load_config
from trainbench.iqa_data import CropsDataset, ImageStore, _normalize, grid_positions, load_resized, synth_kadid
from trainbench.learner import build_learner, get_device, training_callbacks
from trainbench.tasks.iqa import LRSchedule, srcc


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def reference_eval(model, files, n, p, size, dev):
    "The reference protocol: every (image, crop) is its own item: decode, crop, one forward of batch size 1."
    scores = []
    with torch.inference_mode():
        for f in files:
            s = []
            for i in range(n):
                img = load_resized(f, size, p)                       # the reference's dataset opens the file per item
                t, l = grid_positions(*img.shape[1:], p, n)[i]
                s.append(model(_normalize(img[:, t:t+p, l:l+p])[None].to(dev)).float().item())
            scores.append(np.mean(s))
    return np.array(scores)


def batched_eval(model, files, n, p, size, dev, images_per_batch):
    "trainbench's protocol: decode each image once, all its crops and those of `images_per_batch` images in one forward."
    ds = CropsDataset(ImageStore(files, size, p, preload=False), None, n, p)
    dl = torch.utils.data.DataLoader(ds, batch_size=images_per_batch, num_workers=0)
    with torch.inference_mode(): return torch.cat([model(x.to(dev)).float().cpu() for x in dl]).numpy()


def evaluation(cfg, root, dev, n_images):
    task = get_task('iqa')
    files = sorted((root/'images').glob('R*_*_*.png'))[:n_images]
    dmos = pd.read_csv(root/'dmos.csv').set_index('dist_img').dmos
    targets = dmos[[f.name for f in files]].to_numpy()
    torch.manual_seed(0)
    model = task.model(cfg, None).to(dev).eval()
    d = cfg.data
    n, p, bs = d.val_patch_num, d.patch_size, max(1, cfg.training.batch_size // d.val_patch_num)
    batched_eval(model, files[:2], n, p, d.resize, dev, bs); reference_eval(model, files[:1], 2, p, d.resize, dev)   # warm up
    sync(dev); t0 = time.perf_counter(); ref = reference_eval(model, files, n, p, d.resize, dev); sync(dev); t_ref = time.perf_counter() - t0
    sync(dev); t0 = time.perf_counter(); ours = batched_eval(model, files, n, p, d.resize, dev, bs); sync(dev); t_ours = time.perf_counter() - t0
    s_ref, s_ours = srcc(ref, targets), srcc(ours, targets)
    print(f'{len(files)} images x {n} crops of {p} px: reference protocol (bs 1) {t_ref:.2f} s, batched ({bs} images = {bs*n} crops '
          f'per forward) {t_ours:.2f} s: {t_ref/t_ours:.1f}x faster  (goal >= 10x)')
    print(f'  SRCC reference {s_ref:.6f}, batched {s_ours:.6f}, identical: {s_ref == s_ours} '
          f'(largest score difference {np.abs(ref - ours).max():.2e}, same ranking: {(np.argsort(ref) == np.argsort(ours)).all()})')


def training(cfg, root, dev, epochs=2):
    "Seconds per training epoch (training phase only) of the pipeline and of a plain loop; the fastest of `epochs`."
    task = get_task('iqa')
    out = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    data = task.data(cfg, dev)
    learn = build_learner(task, cfg, data, task.model(cfg, data), path=out)
    t = cfg.training
    timer = TrainTimer(dev)
    learn.fit(epochs, t.lr, cbs=[LRSchedule(t.lr, t.lr_ratio), timer, *training_callbacks(task, cfg, out, data.info)])
    pipeline = min(timer.seconds)
    shutil.rmtree(out)
    torch.manual_seed(0)
    model = task.model(cfg, data).to(dev)
    groups = task.splitter(model)
    opt = torch.optim.Adam([{'params': groups[0], 'lr': t.lr}, {'params': groups[1], 'lr': t.lr*t.lr_ratio}],
                           weight_decay=t.weight_decay, fused=True)
    dl = torch.utils.data.DataLoader(data.dls.train.dataset, batch_size=t.batch_size, shuffle=True, num_workers=data.dls.train.num_workers,
                                     drop_last=data.dls.train.drop_last)
    plain = []
    for _ in range(epochs):
        model.train(); sync(dev); t0 = time.perf_counter()
        for x, y in dl:
            loss = F.l1_loss(model(x.to(dev)), y.to(dev))
            opt.zero_grad(); loss.backward(); opt.step()
        sync(dev); plain.append(time.perf_counter() - t0)
    return pipeline, min(plain), len(data.dls.train.dataset)


class TrainTimer(Callback):
    "Seconds of each epoch's training phase."
    def __init__(self, dev): self.dev, self.seconds = dev, []
    def before_train(self): sync(self.dev); self.t0 = time.perf_counter()
    def after_train(self): sync(self.dev); self.seconds.append(time.perf_counter() - self.t0)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--paper', action='store_true', help="the paper's ResNet-50 HyperNet at 224 px (use a GPU)")
    p.add_argument('--refs', type=int, default=6, help='synthetic reference images (35 distorted images each)')
    p.add_argument('--images', type=int, default=24, help='images in the evaluation comparison')
    a = p.parse_args()
    log_to_console().setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp())
    size = (512, 384) if a.paper else (128, 96)
    root = synth_kadid(tmp/'kadid', a.refs, seed=0, size=size)
    over = {'data.root_dir': str(root), 'output.tensorboard': False, 'model.pretrained': False}
    if a.paper: over.update({'model.name': 'resnet50', 'model.width': 64, 'data.patch_size': 224, 'data.val_patch_num': 25,
                             'data.train_patch_num': 4, 'training.batch_size': 96, 'model.lda_out': 16, 'model.hyper_in': 112,
                             'model.target_in': 224, 'model.f1': 112, 'model.f2': 56, 'model.f3': 28, 'model.f4': 14})
    else: over.update({'data.val_patch_num': 25})
    cfg = load_config('iqa/quick', over)
    dev = get_device('auto')
    print(f'torch {torch.__version__}, device {dev}, {torch.get_num_threads()} threads, '
          f"{'paper HyperNet (ResNet-50, 224 px)' if a.paper else 'iqa/quick model (ResNet-18 width 16, 64 px)'}")
    print('\n1. Batched 25-crop evaluation against the reference protocol')
    evaluation(cfg, root, dev, a.images)
    print('\n2. Training throughput: the fastai pipeline against a plain PyTorch loop')
    pipe, plain, n = training(cfg, root, dev)
    print(f'  {n} patches per epoch: pipeline {n/pipe:.1f} patches/s, plain loop {n/plain:.1f} patches/s: ratio {plain/pipe:.3f}  (goal >= 0.95)')
    shutil.rmtree(tmp)
