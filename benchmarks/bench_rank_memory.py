"""Peak memory of a frozen-feature rank run on 10,000 generated images. Goal: under 2 GB.

The run is `rank/quick` (frozen tiny CLIP + ResNet-18 layer2 + IQA statistics, features cached in memory-mapped .npy
files) on a synthetic PhotoTriage of 2,000 series of 5 photos, in a child process whose peak resident set size
(`ru_maxrss`) is read when it ends: extraction, the cache and the training of the head all count.

Run: .venv/bin/python benchmarks/bench_rank_memory.py [--series 2000] [--size 64] [--epochs 2] [--smoke]
"""
import argparse, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

from trainbench.readers.pairs import synth_phototriage
from report import ratio

RUN = """
import sys
from trainbench.learner import train
r = train('rank/quick', {'data.root_dir': sys.argv[1], 'data.cache_dir': sys.argv[2], 'data.img_size': int(sys.argv[3]),
                         'training.epochs': int(sys.argv[4]), 'output.tensorboard': False}, output_dir=sys.argv[5])
print(f"test pairwise accuracy {r.results['accuracy']:.3f} on {r.results['n_pairs']} pairs")
"""


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--series', type=int, default=2000, help='series of 5 photos (2000: 10,000 images)')
    p.add_argument('--size', type=int, default=64, help='image side in pixels')
    p.add_argument('--epochs', type=int, default=2)
    p.add_argument('--smoke', action='store_true', help='a few seconds: 4 series of 32 px, 1 epoch (the test suite runs it)')
    a = p.parse_args(argv)
    if a.smoke: a.series, a.size, a.epochs = 4, 32, 1
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    root = synth_phototriage(tmp/'rank', a.series, photos=5, seed=0, size=a.size)
    n = len(list((root/'train_val_imgs').glob('*.JPG')))
    print(f'{n} images of {a.size} px generated in {time.perf_counter() - t0:.0f} s')
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, '-c', RUN, str(root), str(tmp/'cache'), str(a.size), str(a.epochs), str(tmp/'out')],
                         capture_output=True, text=True)
    if out.returncode: sys.exit(f'the rank run failed:\n{out.stderr[-3000:]}')
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9   # Linux reports KiB
    print(f'frozen-feature rank run on {n} images ({a.epochs} epochs) in {time.perf_counter() - t0:.0f} s: '
          f'peak resident memory {peak_gb:.2f} GB  (goal < 2 GB); {out.stdout.strip()}')
    ratio(f'peak memory of a frozen-feature rank run on {n} images', 'the 2 GB goal', peak_gb, 2, higher=False, unit='GB',
          note=f'peak RSS of the run\'s process (ru_maxrss), {a.size}-px images, rank/quick features, {a.epochs} epochs')
    shutil.rmtree(tmp)


if __name__ == '__main__': main()
