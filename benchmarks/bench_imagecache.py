"""The decoded-image cache against decoding every epoch, side by side in one process on the same JPEGs.

A classify dataset of 512 JPEGs of 800x600 px (two classes) at 64 px:
1. the data side of an epoch: one pass of the training DataLoader (decode, resize, augment, normalise, batch)
   against the same pass reading the warm decoded cache (augment, normalise, batch). Goal: >= 3x faster.
2. whole epochs (training and validation) of classify/quick runs, `data.cache_images` false against true, the fastest
   epoch after the first of each run. Goal: >= 3x. The model's forward and backward are the same in both, so the ratio
   depends on the model's share of the epoch: it is measured for MobileNetV3-small, whose step on this CPU is short
   next to decoding an 800-px JPEG (as a GPU's step would be), and for ResNet-18, whose step on 2 CPU cores is not.
3. whole runs, the same two, start to finish (model build, epochs, test evaluation, report): reported.
The cache is built once beforehand; its build time is reported too.

Run: .venv/bin/python benchmarks/bench_imagecache.py [--n 512] [--epochs 3] [--smoke]
"""
import argparse, tempfile, time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from trainbench.core import log_to_console
from trainbench.imagecache import cached_images
from trainbench.learner import train
from report import ratio
from timers import PhaseTimer


def photo(rng, kind, w=800, h=600):
    "A photo-like JPEG: a smooth gradient, texture noise, and a disc (class a) or a bar (class b)."
    g = np.linspace(0, 1, w)[None, :, None] * rng.uniform(-80, 80, 3) + np.linspace(0, 1, h)[:, None, None] * rng.uniform(-80, 80, 3)
    img = Image.fromarray(np.clip(120 + g + rng.normal(0, 18, (h, w, 3)), 0, 255).astype(np.uint8))
    d, (x, y), r = ImageDraw.Draw(img), rng.uniform(150, 650, 2), rng.uniform(60, 140)
    fill = tuple(int(v) for v in rng.integers(0, 255, 3))
    if kind == 'a': d.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    else: d.rectangle([x - r, y - r/4, x + r, y + r/4], fill=fill)
    return img


def make_dataset(root, n, size=(800, 600)):
    rng = np.random.default_rng(0)
    for split, m in (('train', n), ('val', n // 8)):
        for kind in 'ab':
            (root/split/kind).mkdir(parents=True, exist_ok=True)
            for i in range(m // 2): photo(rng, kind, *size).save(root/split/kind/f'{i:04d}.jpg', quality=90)
    return root


def main(argv=None):
    ap = argparse.ArgumentParser(); ap.add_argument('--n', type=int, default=512); ap.add_argument('--epochs', type=int, default=3)
    ap.add_argument('--models', default='mobilenet_v3_small,resnet18', help='classify models whose epochs are timed, comma-separated')
    ap.add_argument('--smoke', action='store_true', help='a few seconds: 16 JPEGs, 2 epochs, MobileNetV3 only (the test suite runs it)')
    a = ap.parse_args(argv)
    if a.smoke: a.n, a.epochs, a.models = 16, 2, 'mobilenet_v3_small'   # and photos of 160x120 (below)
    log_to_console()
    tmp = Path(tempfile.mkdtemp())
    root = make_dataset(tmp/'photos', a.n, (160, 120) if a.smoke else (800, 600))
    over = {'data.root_dir': str(root), 'data.img_size': 64, 'training.epochs': a.epochs, 'output.tensorboard': False,
            'data.cache_dir': str(tmp/'cache'), 'training.early_stopping_patience': 0}
    files = sorted(root.rglob('*.jpg'))
    t0 = time.perf_counter(); cached_images(files, 64, cache_dir=tmp/'cache'); t_build = time.perf_counter() - t0
    from trainbench.config import load_config
    from trainbench.task import get_task
    loaders = {c: get_task('classify').data(load_config('classify/quick', {**over, 'data.cache_images': c, 'data.num_workers': 0})).dls.train
               for c in (False, True)}
    passes = {}
    for c in (False, True, False, True):
        t0 = time.perf_counter()
        for _ in loaders[c]: pass
        passes.setdefault(c, []).append(time.perf_counter() - t0)
    print(f'data side of an epoch ({len(loaders[True].dataset)} training images, one process): decoding {min(passes[False]):.2f} s, '
          f'decoded cache {min(passes[True]):.2f} s: {min(passes[False])/min(passes[True]):.1f}x faster  (goal >= 3x)')
    ratio(f'decoded-image cache, data side of an epoch ({len(loaders[True].dataset)} of {len(files)} JPEGs 800x600 -> 64 px)',
          'decoding and resizing every epoch', min(passes[False])/min(passes[True]), 3,
          note=f'one DataLoader pass: decoding {min(passes[False]):.2f} s, cache {min(passes[True]):.2f} s')
    for model in a.models.split(','):   # a small model shows the data side's share (as a GPU would); ResNet-18 is CPU-bound here
        times, epochs = {}, {}
        for cache in (False, True):
            timer = PhaseTimer()
            t0 = time.perf_counter()
            train('classify/quick', {**over, 'model.name': model, 'data.cache_images': cache}, output_dir=tmp/'out', cbs=[timer])
            times.setdefault(cache, []).append(time.perf_counter() - t0)
            epochs.setdefault(cache, []).extend(timer.epoch_s[1:])
        ep_plain, ep_fast = min(epochs[False]), min(epochs[True])
        print(f'{model}: {len(files)} JPEGs of 800x600 at 64 px, fastest epoch after the first: decoding every epoch {ep_plain:.2f} s, '
              f'decoded cache {ep_fast:.2f} s: {ep_plain/ep_fast:.2f}x faster epochs')
        ratio(f'decoded-image cache, classify/quick epochs (training + validation, {model} at 64 px, {len(files)} JPEGs 800x600)',
              'decoding and resizing every epoch', ep_plain/ep_fast, 3,
              note=f'fastest epoch after the first of a run each: {ep_plain:.2f} s against {ep_fast:.2f} s; the forward and '
                   f'backward of the model are the same in both, so the larger its share of the epoch, the lower the ratio')
        plain, fast = min(times[False]), min(times[True])
        print(f'{model}: {len(files)} JPEGs of 800x600, {a.epochs} epochs at 64 px: decoding every epoch {plain:.1f} s, decoded cache '
              f'{fast:.1f} s: {plain/fast:.1f}x faster (whole runs); building the cache once took {t_build:.1f} s')
        ratio(f'decoded-image cache, whole classify/quick runs ({a.epochs} epochs, {model} at 64 px)', 'decoding every epoch', plain/fast, None,
              note=f'{plain:.1f} s against {fast:.1f} s; start-up, the model build and the test evaluation are in both; the cache '
                   f'build ({t_build:.1f} s) is paid once')


if __name__ == '__main__': main()
