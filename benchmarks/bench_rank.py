"""Speed of the rank task's frozen-feature path, measured side by side in one process on the same synthetic data.

1. A frozen multi-feature run (CLIP ViT-B-32 + ResNet-50 layer4 + IQA at 224 px, random weights since nothing can be
   downloaded here) end to end, with a cold feature cache against the same run with a warm one. Goal: >= 10x faster.
2. One head-only training epoch against one frozen-backbone pass (CLIP + ResNet-50) over the same images: what the
   cache saves every epoch.
3. Extraction throughput of `trainbench.features.extract` (batched, inference mode, DataLoader; fp32, and bf16
   autocast as with `training.mixed_precision: bf16`) against a naive loop that opens, transforms and embeds one
   image at a time in fp32.

Run: .venv/bin/python benchmarks/bench_rank.py [--series N] [--cache-only] [--smoke]
"""
import argparse, logging, shutil, tempfile, time
from pathlib import Path

import torch

from trainbench.core import log_to_console

from trainbench.data import open_image
from trainbench.features import CLIPFeatures, CNNFeatures, extract
from trainbench.learner import train
from trainbench.readers.pairs import synth_phototriage
from report import ratio

OVERRIDES = {'features.clip_model': 'ViT-B-32', 'features.clip_pretrained': None, 'features.cnn_backbone': 'resnet50',
             'features.cnn_layer': 'layer4', 'features.cnn_pretrained': False, 'data.img_size': 224,
             'training.epochs': 20, 'training.early_stopping_patience': 0, 'output.tensorboard': False}


def cold_vs_warm(root, out, over=OVERRIDES):
    cache = Path(tempfile.mkdtemp())
    over = {**over, 'data.root_dir': str(root), 'data.cache_dir': str(cache)}
    t0 = time.perf_counter(); cold = train('rank/quick', over, output_dir=out); t_cold = time.perf_counter() - t0
    t0 = time.perf_counter(); warm = train('rank/quick', over, output_dir=out); t_warm = time.perf_counter() - t0
    n = len(cold.learn.dls.train.dataset)
    print(f'frozen multi-feature run, {n} training pairs, {over["training.epochs"]} epochs: cold cache {t_cold:.1f} s, warm cache {t_warm:.1f} s, '
          f'warm is {t_cold/t_warm:.1f}x faster  (goal >= 10x)')
    feats = f"CLIP {over['features.clip_model']} + {over['features.cnn_backbone']} at {over['data.img_size']} px"
    ratio(f'frozen-feature rank run with a warm feature cache ({n} pairs, {feats})', 'the same run, cold cache',
          t_cold/t_warm, 10, note=f'end to end: {t_cold:.1f} s cold, {t_warm:.1f} s warm; the warm run is mostly fixed cost (model build, 20 epochs, '
               'evaluation), so the ratio grows with the dataset (more images to extract cold)')
    shutil.rmtree(cache)
    return warm


def head_epoch_vs_backbone_pass(run, clip='ViT-B-32', cnn='resnet50', size=224):
    "Seconds of one head-only training epoch against one pass of the frozen backbones over the epoch's images."
    import re
    from trainbench.readers.pairs import filter_pairs, read_pairs
    c = run.config
    train_pairs = filter_pairs(read_pairs(c.data.root_dir, val_split=c.data.val_split, test_split=c.data.test_split, seed=c.seed)['train'],
                               c.data.min_agreement, c.data.min_reviewers)
    files = sorted(set(train_pairs.image1) | set(train_pairs.image2))
    epoch_s = min(float(s) for s in re.findall(r'Train: .*batches, ([\d.]+)s\)', (run.dir/'train.log').read_text()))
    epoch_s = max(epoch_s, 0.05)   # the log rounds to 0.1 s: a smoke-size epoch reads 0.0
    t0 = time.perf_counter()
    for ext in (CLIPFeatures(clip, None), CNNFeatures(cnn, 'layer4', False, size)):
        extract(files, ext, cache_dir=None, batch_size=64)
    pass_s = time.perf_counter() - t0
    print(f'one head-only epoch over {len(train_pairs)} pairs {epoch_s:.2f} s; one frozen-backbone pass over their '
          f'{len(files)} images {pass_s:.1f} s: {pass_s/epoch_s:.0f}x')
    ratio('head-only rank epoch on cached features', 'one frozen-backbone pass over the same images', pass_s/epoch_s,
          note=f'{epoch_s:.2f} s against {pass_s:.1f} s: what the cache saves every epoch')


def extraction_vs_naive(root, n=128, cnn='resnet50', size=224):
    files = sorted(root.glob('train_val_imgs/*.JPG'))[:n]
    n = len(files)
    ext = CNNFeatures(cnn, 'layer4', False, size)
    tfm = ext.transform()
    def naive():
        with torch.no_grad():
            for f in files: ext(tfm(open_image(f))[None])
    bf16 = CNNFeatures(cnn, 'layer4', False, size, precision='bf16')
    runs = {'extract(), 8 per batch (CPU default)': lambda: extract(files, ext, cache_dir=None),
            'extract(), 64 per batch (CUDA default)': lambda: extract(files, ext, cache_dir=None, batch_size=64),
            'extract(), 8 per batch, bf16 autocast': lambda: extract(files, bf16, cache_dir=None),
            'one image at a time': naive}
    times = {k: [] for k in runs}
    for _ in range(2):            # interleaved, fastest of two
        for k, f in runs.items():
            t0 = time.perf_counter(); f(); times[k].append(time.perf_counter() - t0)
    naive_s = min(times['one image at a time'])
    print(f'{cnn} layer4 features of {n} images at {size} px (decode, resize, forward):')
    for k, ts in times.items(): print(f'  {k:40s} {n/min(ts):6.1f} img/s  ({naive_s/min(ts):.2f}x one at a time)')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--series', type=int, default=100, help='synthetic series (5 photos each)')
    p.add_argument('--cache-only', action='store_true', help='only part 1, the cold against warm cache (the goal of the table)')
    p.add_argument('--smoke', action='store_true', help="a few seconds: 4 series, rank/quick's small feature models at 64 px, "
                                                        "2 epochs (the test suite runs it)")
    a = p.parse_args(argv)
    log_to_console().setLevel(logging.WARNING)   # quiet console; train.log keeps everything
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    over, models = OVERRIDES, {}
    if a.smoke:
        a.series, models = 4, dict(clip='tiny-vit', cnn='resnet18', size=64)
        over = {**OVERRIDES, 'features.clip_model': 'tiny-vit', 'features.cnn_backbone': 'resnet18', 'data.img_size': 64, 'training.epochs': 2}
    tmp = Path(tempfile.mkdtemp())
    root = synth_phototriage(tmp/'pt', n_series=a.series, seed=0)
    print('\n1. Cold against warm feature cache, end to end')
    warm = cold_vs_warm(root, tmp/'out', over)
    if not a.cache_only:
        print('\n2. Head-only epoch against a frozen-backbone pass')
        head_epoch_vs_backbone_pass(warm, **models)
        print('\n3. Batched extraction against one image at a time')
        extraction_vs_naive(root, 8 if a.smoke else 128, **{k: v for k, v in models.items() if k != 'clip'})
    shutil.rmtree(tmp)


if __name__ == '__main__': main()
