"""Sweep throughput, measured side by side in one process on the same synthetic data.

1. The same tiny classify runs (8 by default) as one sweep on an embedded Dask cluster of 2 workers, against 1 worker (the runs
   one after another, through the same machinery). Goal: >= 1.6x faster with 2 workers on 2 cores.
2. The per-run overhead of a papermill run: the notebook's wall time minus the training time its run recorded (kernel
   start, imports, config, evaluation and report cells). Reported, no goal; --smoke measures only this, on 2 workers.

Run: .venv/bin/python benchmarks/bench_sweep.py [--runs 8] [--smoke]
"""
import tempfile, time
from pathlib import Path

from trainbench.core import log_to_console
from trainbench.task import get_task
from trainbench.runs import read_summary
from trainbench.sweep import run_sweep
from report import ratio


def sweep_file(path, data, n=8):
    exps = ''.join(f'  s{i}: {{seed: {i}}}\n' for i in range(n))
    path.write_text(f'base: classify/quick\noverrides: {{data.root_dir: {data}, data.img_size: 32, training.epochs: 2, '
                    f'output.tensorboard: false, data.num_workers: 0}}\nexperiments:\n{exps}')
    return path


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(); ap.add_argument('--runs', type=int, default=8, help='tiny classify runs in the sweep')
    ap.add_argument('--smoke', action='store_true', help='one run per sweep (the test suite runs it: each papermill run starts a kernel)')
    a = ap.parse_args(argv)
    n = 1 if a.smoke else a.runs
    log_to_console()
    tmp = Path(tempfile.mkdtemp())
    data = get_task('classify').synth(tmp/'shapes', n=12, seed=0, img_size=32)
    sw = sweep_file(tmp/'bench.yaml', data, n)
    times = {}
    # --smoke: the 2-worker sweep only (the test suite runs it to keep the code alive; a second cluster adds time, not coverage)
    for workers in (2,) if a.smoke else (2, 1):
        t0 = time.perf_counter()
        res = run_sweep(sw, sweep_dir=tmp/f'w{workers}', workers=workers)
        times[workers] = time.perf_counter() - t0
        assert all(r['status'] == 'completed' for r in res.runs.values()), res.runs
        # the overhead of the last sweep's runs: 1 worker's (serial, each run alone), or 2 workers' in --smoke
        overhead = [r['seconds'] - read_summary(r['run_dir'])['duration_s'] for r in res.runs.values()]
        train = [read_summary(r['run_dir'])['duration_s'] for r in res.runs.values()]
    med_over, med_train = sorted(overhead)[len(overhead)//2], sorted(train)[len(train)//2]
    print(f'per-run overhead of a papermill run (kernel start, imports, evaluation cells): '
          f'median {med_over:.1f} s, against a median {med_train:.1f} s of training')
    ratio('per-run papermill overhead (kernel start, imports, evaluation cells)', 'the whole papermill run',
          100 * med_over / (med_over + med_train), unit='%',
          note=f'median {med_over:.1f} s of overhead and {med_train:.1f} s of training per tiny run (the sweep on {workers} worker(s))')
    if a.smoke: return
    print(f'{n} tiny runs: 2 workers {times[2]:.1f} s, 1 worker {times[1]:.1f} s, '
          f'2 workers are {times[1]/times[2]:.2f}x faster  (goal >= 1.6x)')
    ratio(f'{n} tiny classify runs as a sweep on 2 Dask workers', 'the same sweep on 1 worker', times[1]/times[2], 1.6,
          note=f'{times[2]:.1f} s against {times[1]:.1f} s; per-run papermill overhead (kernel start, imports, evaluation cells) '
               f'median {sorted(overhead)[len(overhead)//2]:.1f} s against {sorted(train)[len(train)//2]:.1f} s of training. '
               'Serially each run has both cores (2 threads); on 2 workers one each, and the first run of each worker also '
               'pays its imports of papermill and the task (about 6 s), a fixed cost in both')


if __name__ == '__main__': main()
