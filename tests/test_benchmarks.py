"""Every script in benchmarks/ and tools/ compiles, and every benchmark runs end to end at its smoke size: a benchmark that
no test runs can rot unseen (two did: a stray apostrophe made them fail to compile, and the table was written before it).

The benchmarks run in this process (`main(['--smoke'])`, with benchmarks/ on sys.path as when they run from there):
importing torch, fastai and the tasks once instead of once per script saves ~10 s of CPU each. Each prints `RESULT`
lines, which run_all.py then writes into a table, as `make bench` does.
"""
import contextlib, importlib, io, json, math, py_compile, sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT/'benchmarks'
SCRIPTS = sorted([*BENCH.glob('*.py'), *ROOT.glob('tools/*.py')])
BENCHMARKS = sorted(BENCH.glob('bench_*.py'))
RUNS = {}   # name -> run_all's record of its smoke run, for the table test


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_script_compiles(script, tmp_path):
    py_compile.compile(str(script), cfile=str(tmp_path/'x.pyc'), doraise=True)


@pytest.fixture
def bench_path(monkeypatch, tmp_path):
    "benchmarks/ importable as the scripts expect; their temporary datasets and runs under tmp_path; torch's threads and the console's level restored."
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv('TMPDIR', str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
    from trainbench.core import log_to_console
    threads, console = torch.get_num_threads(), log_to_console()
    level = console.level
    yield
    torch.set_num_threads(threads)
    console.setLevel(level)   # the benchmarks quiet the console; later tests in this process read its lines


@pytest.mark.parametrize('script', BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_smoke(script, bench_path):
    mod = importlib.import_module(script.stem)
    out = io.StringIO()
    with contextlib.redirect_stdout(out): mod.main(['--smoke'])
    text = out.getvalue()
    recs = [json.loads(l[len('RESULT '):]) for l in text.splitlines() if l.startswith('RESULT ')]
    assert recs, f'{script.name} printed no RESULT line:\n{text}'
    for r in recs: assert math.isfinite(r['value']) and (r['value'] > 0 or r['unit'] in ('ms', '%')), r   # ms, %: differences of timings
    RUNS[script.stem] = dict(name=script.stem, cmd=f'python benchmarks/{script.name} --smoke', rc=0, seconds=0., results=recs, output=text)


def test_run_all_writes_the_table(bench_path, tmp_path):
    "run_all.py's table from the smoke runs above: a row per RESULT, a failed benchmark says so."
    run_all = importlib.import_module('run_all')
    runs = list(RUNS.values()) or [dict(name='bench_x', cmd='python benchmarks/bench_x.py', rc=0, seconds=1., output='',
                                        results=[importlib.import_module('report').ratio('x', 'y', 1.0, 0.97, unit='')])]
    runs.append(dict(name='bench_broken', cmd='python benchmarks/bench_broken.py', rc=1, seconds=1., results=[], output='Traceback: boom'))
    run_all.write(runs, tmp_path/'RESULTS.md', 60.)
    table = (tmp_path/'RESULTS.md').read_text()
    for b in runs:
        for r in b['results']: assert f"| {b['name']} | {r['what']} |" in table
    assert '| bench_broken | (failed: exit 1' in table and 'Traceback: boom' in table
