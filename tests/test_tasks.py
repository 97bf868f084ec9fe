"""What every task does the same way, one test per behaviour, parametrized over the five tasks: the experiment notebook
under papermill, the bundled templates, predict agreeing with evaluation, and a stopped run resumed."""
import json, os, signal, threading, time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TASKS, TINY, cli, data_sets, last_line, sets
from trainbench.config import list_templates, load_config


@pytest.mark.parametrize('task', TASKS)
def test_every_bundled_template_validates(task):
    names = [n for n in list_templates() if n.startswith(f'{task}/')]
    assert f'{task}/quick' in names
    for n in names: assert load_config(n).task == task, n
    code, out, _ = cli('configs', '--show', f'{task}/quick')
    assert code == 0 and out.startswith(f'task: {task}')


@pytest.mark.parametrize('task', TASKS)
def test_experiment_notebook_under_papermill(task, task_data, tmp_path):
    "The task's experiment notebook, executed by papermill for a one-epoch run, is kept in the run directory."
    from trainbench.experiments import run_notebook
    over = dict(o.split('=', 1) for o in TINY[task] + data_sets(task, task_data(task), tmp_path/'cache'))
    over.update({'training.epochs': 1} if task != 'multilabel' else {'phase1.epochs': 1, 'phase1.freeze_epochs': 0})
    run_dir = run_notebook(f'{task}/quick', over, output_dir=tmp_path)
    assert json.loads((run_dir/'summary.json').read_text())['status'] == 'completed'
    assert json.loads((run_dir/'results.json').read_text())['split'] == 'test'
    nb = json.loads((run_dir/f'train_{task}.ipynb').read_text())
    injected = [c for c in nb['cells'] if 'injected-parameters' in c['metadata'].get('tags', [])]
    assert injected and f"run_dir = \"{run_dir}\"" in ''.join(injected[0]['source'])
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    assert all(c.get('execution_count') for c in code)                       # every cell ran
    assert any(o.get('output_type') == 'display_data' for c in code for o in c['outputs'])   # the curves were shown
    assert not list(run_dir.glob('.*.ipynb'))                                 # no temporary left behind


def _predict_lines(out):
    "`trainbench predict` stdout -> [{'image': ..., field: value}]"
    return [{'image': l.split('\t')[0], **dict(kv.split('=', 1) for kv in l.split('\t')[1:])} for l in out.strip().splitlines()]


def _eval_images(task, run_dir, data_root):
    "Three evaluated images of the run's predictions.csv, and per image what evaluation predicted for it."
    p = pd.read_csv(run_dir/'predictions.csv')
    if task == 'classify': return {f: dict(label=r.prediction, prob=r[f'prob_{r.prediction}']) for f, (_, r) in zip(p.file, p.head(3).iterrows())}
    if task == 'rank': return {f: dict(score=s) for f, s in zip(p.image1.head(3), p.score1.head(3))}
    if task == 'iqa':
        return {str(data_root/'images'/Path(f).name): dict(score=s) for f, s in zip(p.image.head(3), p.prediction.head(3))}
    if task == 'multilabel':
        probs = p[[c for c in p.columns if c.startswith('prob_')]].head(3)
        files = [next(data_root.glob(f'images_*/images/{n}')) for n in p.image.head(3)]
        return {str(f): dict(findings='|'.join(c[5:] for c in probs.columns if r[c] >= 0.5) or 'No Finding')
                for f, (_, r) in zip(files, probs.iterrows())}
    raise ValueError(task)


@pytest.mark.parametrize('task', ['classify', 'rank', 'iqa', 'multilabel'])
def test_predict_agrees_with_evaluation(task, task_run, task_data):
    "`trainbench predict RUN IMAGES` gives each evaluated image what evaluation wrote in predictions.csv."
    run_dir, _ = task_run(task)
    expected = _eval_images(task, run_dir, task_data(task))
    code, out, err = cli('predict', run_dir, *expected)
    assert code == 0, err
    got = _predict_lines(out)
    assert [g['image'] for g in got] == [str(f) for f in expected]
    for g, (f, e) in zip(got, expected.items()):
        for k, v in e.items():
            if isinstance(v, str): assert g[k] == v, (f, k, g, e)
            else: assert abs(float(g[k]) - v) < 1e-3, (f, k, g, e)


def test_segment_predict_agrees_with_evaluation(task_run, walls, tmp_path):
    "segment: the mask `predict` writes (at the image's size) covers what evaluation predicted (at img_size), per image."
    run_dir, _ = task_run('segment')
    p = pd.read_csv(run_dir/'predictions.csv')
    size = load_config(run_dir/'config.yaml').data.img_size
    rows = p[p.prompt == 'segment crack'].head(3)
    files = [next(walls.rglob(Path(str(f)).name)) for f in rows.image]
    code, out, err = cli('predict', run_dir, *files, '--prompt', 'segment crack', '--out', tmp_path)
    assert code == 0, err
    got = _predict_lines(out)
    assert [g['image'] for g in got] == [str(f) for f in files]
    for g, (_, r) in zip(got, rows.iterrows()):
        assert abs(float(g['mask_fraction']) - r.predicted_pixels/size**2) < 0.05, (g, r)


def _stop_after_first_epoch(parent):
    "Send this process SIGTERM (trainbench's Stop) once a run under `parent` has recorded an epoch."
    def watch():
        deadline = time.time() + 300
        while time.time() < deadline:
            for m in parent.glob('**/metrics.json'):
                try: n = len(json.loads(m.read_text())['epochs'])
                except (json.JSONDecodeError, OSError, KeyError): n = 0
                if n >= 1: return os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.02)
    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize('task', TASKS)
def test_stopped_run_resumes_to_its_epochs(task, task_data, tmp_path):
    "A run stopped after its first epoch (SIGTERM) is marked stopped; `--resume` completes it, each epoch recorded once."
    epochs = {'multilabel': [1, 2, 3]}.get(task, [1, 2, 3])
    old = signal.signal(signal.SIGTERM, lambda *a: None)   # a signal arriving after the fit must not end pytest
    try:
        watcher = _stop_after_first_epoch(tmp_path/'out')
        more = ['training.epochs=3'] if task != 'multilabel' else []
        code, out, err = cli('train', f'{task}/quick', *sets(*data_sets(task, task_data(task), tmp_path/'cache'), *TINY[task], *more),
                             '--output-dir', tmp_path/'out')
        watcher.join(timeout=60)
    finally: signal.signal(signal.SIGTERM, old)
    assert code == 130 or code == 0, err
    run_dir, = (tmp_path/'out').glob(f'{task}/quick/*')
    summary = json.loads((run_dir/'summary.json').read_text())
    assert summary['status'] == 'stopped' and 1 <= summary['total_epochs'] < len(epochs), (summary, err[-2000:])
    assert not (run_dir/'results.json').exists()
    code, out, err = cli('train', '--resume', run_dir)
    assert code == 0, err
    assert last_line(out) == run_dir
    assert [e['epoch'] for e in json.loads((run_dir/'metrics.json').read_text())['epochs']] == epochs
    assert pd.read_csv(run_dir/'history.csv')['epoch'].tolist() == epochs
    assert json.loads((run_dir/'summary.json').read_text())['status'] == 'completed'
    assert json.loads((run_dir/'results.json').read_text())['split'] == 'test'
    assert 'Resuming' in (run_dir/'train.log').read_text()
