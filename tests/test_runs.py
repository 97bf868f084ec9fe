"Seeding, resume after a kill, a stopped run, run naming and the other run-directory promises."
import json, signal, subprocess, time
from pathlib import Path

import pandas as pd
import torch

from conftest import BIN, FAST, cli, run_cli, sets
from trainbench.learner import train


def _fast(root, *more): return {'data.root_dir': str(root), **dict(o.split('=', 1) for o in FAST), **dict(more)}


def test_same_seed_same_metrics(shapes, tmp_path):
    a = train('classify/quick', _fast(shapes), output_dir=tmp_path)
    b = train('classify/quick', _fast(shapes), output_dir=tmp_path)
    c = train('classify/quick', _fast(shapes, ('seed', 7)), output_dir=tmp_path)
    assert b.dir.name == a.dir.name + '_1'                                # never overwritten: a suffix
    assert (a.dir/'metrics.json').read_text() == (b.dir/'metrics.json').read_text()
    assert (a.dir/'metrics.json').read_text() != (c.dir/'metrics.json').read_text()


def _wait_for_epochs(run_dir_parent, n, proc, timeout=300):
    "Wait until a run under `run_dir_parent` has recorded `n` epochs; return its directory."
    t0 = time.time()
    while time.time() - t0 < timeout:
        for m in run_dir_parent.glob('*/*/*/metrics.json'):
            try:
                if len(json.loads(m.read_text())['epochs']) >= n: return m.parent
            except (json.JSONDecodeError, OSError): pass   # cannot happen with atomic writes, but do not hang on it
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise TimeoutError


def _adam_steps(ckpt_path):
    "How many optimizer steps the checkpoint's Adam state has taken."
    state = torch.load(ckpt_path, weights_only=True)['optimizer']['state']
    return int(next(iter(state.values()))['step'])


def test_killed_run_resumes_without_duplicate_epochs(shapes, tmp_path):
    args = ['train', 'classify/quick', *sets(*[f'{k}={v}' for k, v in _fast(shapes, ('training.epochs', 4)).items()]),
            '--output-dir', tmp_path/'killed']
    proc = subprocess.Popen([str(BIN/'trainbench'), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = _wait_for_epochs(tmp_path/'killed', 2, proc)
    time.sleep(0.3)                                                       # into the third epoch
    proc.kill(); proc.wait(timeout=30)
    assert json.loads((run_dir/'summary.json').read_text())['status'] == 'running'   # killed: it had no chance to say more
    res = run_cli('train', '--resume', run_dir)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == str(run_dir)
    epochs = json.loads((run_dir/'metrics.json').read_text())['epochs']
    assert [e['epoch'] for e in epochs] == [1, 2, 3, 4]
    assert pd.read_csv(run_dir/'history.csv')['epoch'].tolist() == [1, 2, 3, 4]
    assert json.loads((run_dir/'summary.json').read_text())['status'] == 'completed'
    assert 'Resuming' in (run_dir/'train.log').read_text()
    # the optimizer state came back: as many Adam steps as an uninterrupted 4-epoch run
    full = train('classify/quick', _fast(shapes, ('training.epochs', 4)), output_dir=tmp_path/'full')
    assert _adam_steps(run_dir/'final_model.pth') == _adam_steps(full.dir/'final_model.pth')
    # and a finished run can be extended
    res = run_cli('train', '--resume', run_dir, *sets('training.epochs=5'))
    assert res.returncode == 0, res.stderr
    assert [e['epoch'] for e in json.loads((run_dir/'metrics.json').read_text())['epochs']] == [1, 2, 3, 4, 5]


def test_terminated_run_is_marked_stopped_and_keeps_log_and_checkpoint(shapes, tmp_path):
    args = ['train', 'classify/quick', *sets(*[f'{k}={v}' for k, v in _fast(shapes, ('training.epochs', 20)).items()]),
            '--output-dir', tmp_path]
    proc = subprocess.Popen([str(BIN/'trainbench'), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = _wait_for_epochs(tmp_path, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = json.loads((run_dir/'summary.json').read_text())
    assert summary['status'] == 'stopped' and summary['total_epochs'] >= 1
    assert (run_dir/'final_model.pth').exists() and (run_dir/'train.log').stat().st_size > 0
    assert not (run_dir/'results.json').exists()


def test_save_all_epochs_and_bf16_on_cpu(shapes, tmp_path):
    # bf16 autocast on a CPU without bf16 units is about 12x slower than float32: a quarter of the data at 16 px
    run = train('classify/quick', _fast(shapes, ('training.save_all_epochs', True), ('training.mixed_precision', 'bf16'),
                                        ('data.img_size', 16), ('data.quick_experiment', 0.25)), output_dir=tmp_path)
    assert {'epoch_1.pth', 'epoch_2.pth'} <= {p.name for p in run.dir.iterdir()}
    assert torch.load(run.dir/'epoch_1.pth', weights_only=True)['epoch'] == 1
    assert run.summary['status'] == 'completed'


def test_val_split_from_train_is_seeded_and_test_is_never_seen_in_training(shapes_noval, tmp_path):
    a = train('classify/quick', _fast(shapes_noval, ('data.val_split', 0.25)), output_dir=tmp_path)
    b = train('classify/quick', _fast(shapes_noval, ('data.val_split', 0.25)), output_dir=tmp_path)
    assert a.learn.dls.valid.dataset.files == b.learn.dls.valid.dataset.files        # the same split again
    train_files, valid_files = set(a.learn.dls.train.dataset.files), set(a.learn.dls.valid.dataset.files)
    assert len(valid_files) == 12 and not train_files & valid_files
    test_files = set(Path(f) for f in pd.read_csv(a.dir/'predictions.csv')['file'])
    assert a.results['split'] == 'test' and len(test_files) == 16
    assert not test_files & (train_files | valid_files)


def test_quick_experiment_and_flat_params(shapes, tmp_path):
    code, out, err = cli('train', 'classify/quick', *sets(*[f'{k}={v}' for k, v in _fast(shapes).items()]),
                         '--quick-experiment', '0.5', '--output-dir', tmp_path/'q')
    assert code == 0, err
    assert 'Training samples: 24, Validation samples: 8, Test samples: 8' in err
    params = tmp_path/'params.yaml'   # the classify reference system's flat file
    params.write_text('model_name: resnet18\nepochs: 1\nbatch_size: 8\nlr: 0.001\nfreeze_ratio: 0.5\nseed: 3\nimg_size: 32\n'
                      "classes: ['square', 'disc']\n")
    code, out, err = cli('train', params, *sets(f'data.root_dir={shapes}', 'model.pretrained=false', 'output.tensorboard=false'),
                         '--output-dir', tmp_path/'flat')
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_dir.name == 'lr1e-3_bs8_ep1_val0.1_seed3'
    saved = (run_dir/'config.yaml').read_text()
    assert 'freeze_ratio: 0.5' in saved and "- square\n  - disc" in saved
    assert json.loads((run_dir/'results.json').read_text())['classes'] == ['square', 'disc']


def test_lr_find_saves_plot_and_suggestions(shapes, tmp_path):
    code, out, err = cli('lr-find', 'classify/quick', *sets(f'data.root_dir={shapes}', 'data.img_size=32'),
                         '--num-it', '20', '--output-dir', tmp_path)
    assert code == 0, err
    assert out.startswith('suggested lr: ')
    assert '\r' not in err and 'LR search' not in err, err   # no terminal: log lines only, no progress bar
    d = next(tmp_path.glob('classify/quick/lr_find_*'))
    res = json.loads((d/'lr_find.json').read_text())
    sug, lrs, losses = res['suggestions'], res['lrs'][2:-5], res['losses'][2:-5]   # the curve lr_suggestions reads
    assert 'minimum' in sug and set(sug) <= {'valley', 'minimum', 'steep'} and len(res['lrs']) > 5, sug
    assert all(v <= lrs[losses.index(min(losses))] * (1 + 1e-6) for v in sug.values()), sug   # none past the loss minimum
    name = 'valley' if 'valley' in sug else next(iter(sug))
    assert out.startswith(f'suggested lr: {sug[name]:.2e} ({name})'), out
    assert (d/'lr_find.png').read_bytes()[:4] == b'\x89PNG'
