"""MLflow tracking's share of a quick run's wall time.

The same `classify/quick` run (its synthetic dataset, the demo's settings) as a `trainbench train` process with tracking
off (TRAINBENCH_TRACKING=off) and on (the embedded SQLite store, already created: the first run into a new store also
pays creating its tables, about 7 s once), alternating, `--pairs` times. The figure is the median of
(on - off) / off over the pairs, in whole-process wall time: MLflow's import and store opening run in a background
thread beside training, and the run's end waits for its last logging (results, artifacts, status). Goal: <= 3%.

Run: .venv/bin/python benchmarks/bench_tracking.py [--pairs 1] [--epochs N] [--smoke]
"""
import os, subprocess, sys, tempfile, time
from pathlib import Path

from trainbench.task import get_task
from trainbench.tracking import mlflow_client, tracking_uri
from report import ratio

BIN = Path(sys.executable).parent


def run(data, out, store, on:bool, epochs, extra=()):
    env = {**os.environ, 'TRAINBENCH_TRACKING': 'on' if on else 'off'}
    env.pop('MLFLOW_TRACKING_URI', None)
    cmd = [str(BIN/'trainbench'), 'train', 'classify/quick', '--set', f'data.root_dir={data}', '--set', 'output.tensorboard=false',
           '--set', f'tracking.uri={store}', '--output-dir', str(out)] + (['--set', f'training.epochs={epochs}'] if epochs else []) + list(extra)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    return time.perf_counter() - t0


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(); ap.add_argument('--pairs', type=int, default=1); ap.add_argument('--epochs', type=int)
    ap.add_argument('--smoke', action='store_true', help='seconds: 4 images per class at 32 px, one epoch (the test suite runs it)')
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    data = get_task('classify').synth(tmp/'shapes', **(dict(n=4, img_size=32) if a.smoke else {}))
    extra = ['--set', 'data.img_size=32'] if a.smoke else []
    if a.smoke: a.epochs = 1
    store = tmp/'store'
    mlflow_client(tracking_uri(uri=str(store))).search_experiments()   # the store exists
    shares, walls = [], []
    for i in range(a.pairs):
        off = run(data, tmp/f'off{i}', store, False, a.epochs, extra)
        on = run(data, tmp/f'on{i}', store, True, a.epochs, extra)
        shares.append((on - off) / off); walls.append((off, on))
        print(f'pair {i+1}: tracking off {off:.1f} s, on {on:.1f} s: {100*shares[-1]:+.1f}%')
    med = sorted(shares)[len(shares)//2]
    ratio('MLflow tracking of a classify/quick run (embedded SQLite store)', 'the same run with tracking off', 100*med, 3, higher=False,
          unit='%', note=f'median of {a.pairs} alternating pairs of whole `trainbench train` processes: '
                         + ', '.join(f'{off:.1f} s off / {on:.1f} s on' for off, on in walls))


if __name__ == '__main__': main()
