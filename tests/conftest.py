"""End-to-end test helpers: each task's small synthetic dataset and one shared tiny run, and the CLI in-process or as a process.

`task_data(task)` writes a task's dataset once per session; `task_run(task)` trains one tiny `TASK/quick` run once per
session, shared by every test that only reads a run (evaluate, predict, export, results keys...). Tests that change a
run or its data (resume, bad input) copy the data and train their own, as small as they can.
"""
import contextlib, io, json, os, shutil, subprocess, sys
from pathlib import Path

import pytest

from trainbench.cli import main
from trainbench.task import get_task

BIN = Path(sys.executable).parent
# Runs of the suite are not logged to MLflow (its import and store cost seconds per process); tests/test_tracking.py
# turns it on for its own runs, with the store in a temporary folder.
os.environ['TRAINBENCH_TRACKING'] = 'off'
TASKS = ('classify', 'rank', 'iqa', 'segment', 'multilabel')
# Settings that make a classify run take seconds: small images, two epochs, no TensorBoard.
FAST = ['data.img_size=32', 'training.epochs=2', 'output.tensorboard=false']
# The size of each task's synthetic dataset (`trainbench synth TASK DEST --n N`, seed 0).
SYNTH_N = {'classify': 12, 'rank': 40, 'iqa': 6, 'segment': 12, 'multilabel': 160}
# Per task: settings of a run in seconds (small images, few epochs, no TensorBoard).
TINY = {
    'classify': ['data.img_size=32', 'training.epochs=2', 'output.tensorboard=false'],
    'rank': ['training.epochs=2', 'output.tensorboard=false'],
    'iqa': ['training.epochs=2', 'data.train_patch_num=1', 'data.val_patch_num=4', 'output.tensorboard=false'],
    'segment': ['data.img_size=32', 'training.batch_size=8', 'model.decoder_ff=64', 'training.epochs=2', 'output.tensorboard=false'],
    'multilabel': ['data.img_size=32', 'data.val_pct=0.2', 'phase1.epochs=2', 'phase1.freeze_epochs=1', 'phase2.epochs=1',
                   'phase1.batch_size=32', 'phase2.batch_size=32', 'memory.bank_size=32', 'output.tensorboard=false'],
}
# The data of each task's shared run: SYNTH_N unless given here (None: the task's default size). classify learns to
# 90% test accuracy only with enough images (32-px images or 12 per class leave it near 70%), so it keeps the template's
# default dataset, 100 images per class, at 48 px for 6 epochs (the template: 64 px, 12 epochs; this reached val 0.962,
# test 0.924 in 70 s of CPU time against 190 s).
SHARED_N = {'classify': None}
# The shared run of each task: what the tests that read it need (TensorBoard where its logs are tested, enough epochs to
# learn where learning is asserted, the iqa schedule's three phases, the segment per-prompt metrics, the multilabel LR finder).
SHARED = {
    'classify': ['data.img_size=48', 'training.epochs=6'],
    'rank': ['output.tensorboard=false'],
    'iqa': ['training.epochs=10', 'data.train_patch_num=1', 'data.val_patch_num=4', 'training.save_all_epochs=true',
            'output.tensorboard=false'],
    'segment': ['data.img_size=32', 'training.batch_size=8', 'model.decoder_ff=64', 'training.epochs=4', 'training.checkpoint_every=2',
                'eval.per_prompt=true'],
    'multilabel': TINY['multilabel'] + ['phase1.use_lr_finder=true', 'phase1.lr_finder_iters=8', 'phase2.loss=asl'],
}


@pytest.fixture(scope='session', autouse=True)
def user_cache(tmp_path_factory):
    "The suite's caches go to a temporary folder, never the user's (`default_cache_dir`: $TRAINBENCH_CACHE, ~/.cache/trainbench)."
    old = os.environ.get('TRAINBENCH_CACHE')
    os.environ['TRAINBENCH_CACHE'] = str(tmp_path_factory.mktemp('user-cache'))   # CLI processes and papermill kernels inherit it
    yield Path(os.environ['TRAINBENCH_CACHE'])
    if old is None: os.environ.pop('TRAINBENCH_CACHE', None)
    else: os.environ['TRAINBENCH_CACHE'] = old


def wait_for_http(url, proc, log, timeout):
    "Poll `url` until it answers 200, while the server process `proc` lives; on failure, the tail of its `log` file."
    import time, urllib.request
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200: return
        except OSError: pass
        assert proc.poll() is None and time.time() < deadline, Path(log).read_text()[-3000:]
        time.sleep(0.5)


def cli(*args):
    "Run the CLI in this process; returns (exit status, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main([str(a) for a in args])
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()


def run_cli(*args, env=None, timeout=600, **kw):
    "Run the `trainbench` console script as a new process."
    return subprocess.run([str(BIN/'trainbench'), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def sets(*overrides):
    "['a=1', 'b=2'] -> ['--set', 'a=1', '--set', 'b=2']"
    return [x for o in overrides for x in ('--set', o)]


def error_line(stderr):
    "The CLI's error line: the last line of stderr, which must start with 'error: '."
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith('error: '), stderr
    assert 'Traceback' not in stderr, stderr
    return lines[-1]


def last_line(out): return Path(out.strip().splitlines()[-1])


def data_sets(task, root, cache_dir):
    "The --set overrides that point a `task` run at dataset `root` (and, for rank, at a feature cache)."
    return [f'data.root_dir={root}'] + ([f'data.cache_dir={cache_dir}'] if task == 'rank' else [])


def _shared(tmp_path_factory, name):
    """A folder every pytest process of this session shares, and a lock on it. `make test` runs pytest in two worker
    processes (pytest-xdist), each its own session: the datasets and shared runs are made once, by whichever worker
    asks first, in the folder above the workers' own, while the other waits on the lock."""
    from filelock import FileLock
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base
    (root/'shared').mkdir(exist_ok=True)
    return root/'shared'/name, FileLock(str(root/'shared'/f'{name}.lock'))


def _once(tmp_path_factory, name, make):
    "make(folder) -> a JSON-able value, computed once per test session (across workers) and kept in folder/made.json."
    folder, lock = _shared(tmp_path_factory, name)
    with lock:
        if not (folder/'made.json').exists():
            shutil.rmtree(folder, ignore_errors=True)   # a worker that died half-way
            folder.mkdir()
            (folder/'made.json').write_text(json.dumps(make(folder)))
    return json.loads((folder/'made.json').read_text())


@pytest.fixture(scope='session')
def task_data(tmp_path_factory):
    "(task, n=SYNTH_N[task]) -> the root of its synthetic dataset (`trainbench synth TASK --n N`), written on first use."
    def make(task, n):
        def synth(folder):
            code, out, err = cli('synth', task, folder/task, *(['--n', n] if n else []))
            assert code == 0, err
            return str(last_line(out))
        return synth
    def get(task, n=...):
        n = SYNTH_N[task] if n is ... else n
        return Path(_once(tmp_path_factory, f'data_{task}_{n}', make(task, n)))
    return get


@pytest.fixture(scope='session')
def task_run(task_data, tmp_path_factory):
    "task -> (run directory, stderr) of one `trainbench train TASK/quick` run with SHARED[task], trained on first use."
    def make(task):
        def train(tmp):
            code, out, err = cli('train', f'{task}/quick', *sets(*data_sets(task, task_data(task, SHARED_N.get(task, ...)), tmp/'cache'),
                                                                 *SHARED[task]), '--output-dir', tmp/'out')
            assert code == 0, err
            return [str(last_line(out)), err]
        return train
    def get(task):
        run_dir, err = _once(tmp_path_factory, f'run_{task}', make(task))
        return Path(run_dir), err
    return get


@pytest.fixture(scope='session')
def shapes(task_data): return task_data('classify')


@pytest.fixture(scope='session')
def phototriage(task_data): return task_data('rank')


@pytest.fixture(scope='session')
def kadid(task_data): return task_data('iqa')


@pytest.fixture(scope='session')
def walls(task_data): return task_data('segment')


@pytest.fixture(scope='session')
def cxr(task_data): return task_data('multilabel')


@pytest.fixture(scope='session')
def shapes_noval(tmp_path_factory):
    "A classify dataset without a val/ folder."
    root = get_task('classify').synth(tmp_path_factory.mktemp('data')/'noval', n=12, seed=1)
    shutil.rmtree(root/'val')
    return root
