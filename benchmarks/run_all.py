"""Run every benchmarks/bench_*.py and write benchmarks/RESULTS.md: one table row per measured figure.

Each benchmark runs in its own process (its ratios are measured side by side inside it), with the arguments below that
keep the whole table to about 10 minutes on a quiet 2-core CPU; each prints `RESULT {json}` lines (see report.py), and may
print a Markdown table as `TABLE | ... |` lines, which get a section of their own. A benchmark
that fails or times out gets a row saying so, and its output is kept in the file.

Run: .venv/bin/python benchmarks/run_all.py [--only NAME...] [--out benchmarks/RESULTS.md]
"""
import argparse, json, os, platform, shutil, subprocess, sys, tempfile, time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Sizes for the table run on a 2-core CPU: each benchmark's own defaults are larger (more repetitions, more data).
ARGS = {'bench_step': ['--rounds', '5', '--steps', '3'], 'bench_classify': ['--rounds', '5', '--bf16-models', 'mobilenet_v3_small'], 'bench_imagecache': ['--epochs', '2', '--models', 'mobilenet_v3_small'], 'bench_iqa': ['--rounds', '5'],
        'bench_multilabel': ['--rounds', '5', '--n', '600'], 'bench_rank': ['--series', '50', '--cache-only'], 'bench_segment': ['--rounds', '5', '--n', '120'], 'bench_sweep': ['--runs', '6']}
PINS_THREADS = ('bench_classify', 'bench_iqa', 'bench_multilabel', 'bench_segment', 'bench_step')
TIMEOUT_S = 900   # per benchmark: a shared machine under load runs several times slower than a quiet one


def machine()->str:
    import torch
    cpu = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor()) \
        if Path('/proc/cpuinfo').exists() else platform.processor()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'
    return f'{os.cpu_count()} CPU cores ({cpu}), {gpu}; Python {platform.python_version()}, torch {torch.__version__}'


def run(bench:Path, threads:int=None)->dict:
    "Run one benchmark; its RESULT records, output, wall time and exit status."
    cmd = [sys.executable, bench.name, *ARGS.get(bench.stem, []), *(['--threads', str(threads)] if threads and bench.stem in PINS_THREADS else [])]
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix=f'{bench.stem}-')   # the benchmark's datasets and runs (gigabytes), removed after it
    p = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, 'TMPDIR': tmp, 'PYTHONUNBUFFERED': '1'})
    try:
        out, _ = p.communicate(timeout=TIMEOUT_S)
        rc = p.returncode
    except subprocess.TimeoutExpired:   # keep what it printed so far: the figures it finished count
        p.kill()
        out, _ = p.communicate()
        out, rc = f'{out}\n(timed out after {TIMEOUT_S} s)', 'timeout'
    finally: shutil.rmtree(tmp, ignore_errors=True)
    recs = [json.loads(l[len('RESULT '):]) for l in out.splitlines() if l.startswith('RESULT ')]
    return dict(name=bench.stem, cmd=' '.join(['python', f'benchmarks/{bench.name}', *cmd[2:]]), rc=rc,
                seconds=time.perf_counter() - t0, results=recs, output=out)


def fmt(v:float, unit:str)->str:
    if unit == '%': return f'{v:.1%}'
    return f'{v:.3g}{unit}' if unit in ('x', '') else f'{v:.3g} {unit}'


def goal(r:dict)->str:
    if r['goal'] is None: return 'report'
    return f"{'>=' if r['higher'] else '<='} {fmt(r['goal'], r['unit'])}"


def write(runs:list, path:Path, total_s:float):
    rows = ['| benchmark | measured | against | figure | goal | met |', '|---|---|---|---|---|---|']
    missed = []
    for b in runs:
        if b['rc'] != 0: rows.append(f"| {b['name']} | (failed: exit {b['rc']}, see its output below) | | | | no |")
        for r in b['results']:
            met = {True: 'yes', False: '**no**', None: '-'}[r['met']]
            rows.append(f"| {b['name']} | {r['what']} | {r['against']} | {fmt(r['value'], r['unit'])} | {goal(r)} | {met} |")
            if r['met'] is False: missed.append(f"- {b['name']}: {r['what']}: {fmt(r['value'], r['unit'])} against a goal of "
                                                f"{goal(r)}. {r['note']}")
    notes = [f"- {b['name']}, {r['what']}: {r['note']}" for b in runs for r in b['results'] if r['note'] and r['met'] is not False]
    lines = ['# Benchmark results', '',
             f'Written by `python benchmarks/run_all.py` on {datetime.now():%Y-%m-%d %H:%M}, in {total_s/60:.1f} minutes.',
             f'Machine: {machine()}.', '',
             'Every figure is measured side by side in one process (the benchmark\'s), on this machine; "x" figures are '
             'how many times faster trainbench is than the baseline, plain figures are baseline time / trainbench time.', '',
             *rows, '']
    for b in runs:   # tables a benchmark prints as `TABLE | ... |` lines (bench_step's per-step costs)
        table = [l[len('TABLE '):] for l in b['output'].splitlines() if l.startswith('TABLE ')]
        if table: lines += [f"## {b['name']}", '', *table, '']
    if missed: lines += ['## Goals not met', '', *missed, '']
    if notes: lines += ['## Notes', '', *notes, '']
    lines += ['## Outputs', '']
    for b in runs:
        lines += [f"<details><summary>{b['name']}: <code>{b['cmd']}</code>, {b['seconds']:.0f} s, exit {b['rc']}</summary>", '',
                  '```', *[l for l in b['output'].rstrip().splitlines() if not l.startswith(('RESULT ', 'TABLE '))], '```', '', '</details>', '']
    tmp = path.with_suffix('.tmp')
    tmp.write_text('\n'.join(lines))
    tmp.replace(path)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--only', nargs='*', help='benchmark names (e.g. bench_iqa), run in the order given; default: all')
    p.add_argument('--threads', type=int, help='torch threads for the benchmarks that pin them (both sides of each ratio)')
    p.add_argument('--out', type=Path, default=HERE/'RESULTS.md')
    a = p.parse_args()
    benches = sorted(HERE.glob('bench_*.py'))
    if a.only: benches = [b for n in a.only for b in benches if n in (b.stem, b.stem.removeprefix('bench_'))]   # in the order given
    t0, runs = time.perf_counter(), []
    for b in benches:
        print(f'{b.name} ...', flush=True)
        runs.append(run(b, a.threads))
        r = runs[-1]
        print(f"  {r['seconds']:.0f} s, exit {r['rc']}, {len(r['results'])} figures", flush=True)
        for x in r['results']: print(f"    {x['what']}: {fmt(x['value'], x['unit'])} ({goal(x)})", flush=True)
        write(runs, a.out, time.perf_counter() - t0)   # after each benchmark: a table stopped part-way keeps what ran
    write(runs, a.out, time.perf_counter() - t0)
    print(f'wrote {a.out} in {(time.perf_counter() - t0)/60:.1f} min')
    sys.exit(0 if all(r['rc'] == 0 for r in runs) else 1)


if __name__ == '__main__': main()
