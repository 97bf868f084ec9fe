"""The five tutorials run headless under papermill: form, LR finder, dashboard, results and comparison, for every task.

Each runs in its own kernel with `interactive=False` (the buttons pressed from code, plain progress lines) on a tiny
generated dataset. The five run side by side, three at a time, one torch thread each.
"""
import json, os, subprocess, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# (size of the generated dataset, config overrides): seconds of training each.
TINY = {
    'classify': (8, {'data.img_size': 32, 'training.epochs': 2}),
    'rank': (24, {'training.epochs': 2}),
    'iqa': (4, {'training.epochs': 2, 'data.train_patch_num': 1, 'data.val_patch_num': 4}),
    'segment': (8, {'data.img_size': 32, 'training.batch_size': 8, 'model.decoder_ff': 64, 'training.epochs': 2}),
    'multilabel': (160, {'data.img_size': 32, 'data.val_pct': 0.2, 'phase1.epochs': 2, 'phase1.freeze_epochs': 1,
                         'phase2.epochs': 1, 'phase1.batch_size': 32, 'phase2.batch_size': 32, 'memory.bank_size': 32}),
}


def _papermill(task, tmp):
    n, overrides = TINY[task]
    params = {'interactive': False, 'data_dir': str(tmp/'data'/task), 'output_dir': str(tmp/'outputs'), 'synth_n': n,
              'lr_iters': 20, 'overrides': {**overrides, 'output.tensorboard': False, 'data.cache_dir': str(tmp/'cache'/task)}}
    out = tmp/f'{task}.ipynb'
    import yaml
    r = subprocess.run([str(BIN/'papermill'), str(ROOT/'nbs'/'tutorials'/f'{task}.ipynb'), str(out), '--cwd', str(tmp),
                        '-y', yaml.safe_dump(params), '--no-progress-bar', '--execution-timeout', '300'],
                       capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    return r, out


@pytest.fixture(scope='module')
def tutorials(tmp_path_factory):
    "Every tutorial executed by papermill: {task: (process result, executed notebook)}."
    tmp = tmp_path_factory.mktemp('tutorials')
    with ThreadPoolExecutor(3) as ex: res = dict(zip(TINY, ex.map(lambda t: _papermill(t, tmp), TINY)))
    return tmp, res


def _outputs(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    text, images = [], 0
    for c in nb['cells']:
        for o in c.get('outputs', []):
            if 'text' in o: text.append(''.join(o['text']))
            images += 'image/png' in o.get('data', {})
    return '\n'.join(text), images, nb


@pytest.mark.parametrize('task', list(TINY))
def test_tutorial_runs_headless(tutorials, task):
    tmp, res = tutorials
    r, out = res[task]
    assert r.returncode == 0, r.stderr[-4000:]
    text, images, nb = _outputs(out)
    assert all(c.get('execution_count') for c in nb['cells'] if c['cell_type'] == 'code')   # every cell ran
    assert 'LR suggestions:' in text and 'minimum' in text   # valley is dropped where it lies past the loss minimum (iqa's tiny curve)
    run_line = next(l for l in text.splitlines() if l.startswith('completed: '))
    run_dir = Path(run_line.split()[1])
    assert run_dir.parent.parent == tmp/'outputs'/task
    summary = json.loads((run_dir/'summary.json').read_text())
    assert summary['status'] == 'completed'
    assert (run_dir/'results.json').exists() and (run_dir/'predictions.csv').exists()
    assert f'epoch 1/' in text                  # plain progress lines from the dashboard
    assert images >= 4                           # LR curve, training plot, the task's result view, the comparison curves
    assert 'Traceback' not in text
