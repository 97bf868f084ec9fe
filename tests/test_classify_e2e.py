"A new user's path: generate the data, train classify/quick from the CLI, evaluate, export."
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import cli, error_line

ARTIFACTS = {'config.yaml', 'train.log', 'metrics.json', 'history.csv', 'history.png', 'best_model.pth',
             'final_model.pth', 'summary.json', 'results.json', 'predictions.csv', 'tensorboard'}


@pytest.fixture(scope='module')
def quick_run(task_run):
    "The session's `trainbench train classify/quick` run on the template's dataset at 48 px for 6 epochs (it must learn): (run directory, stderr)."
    return task_run('classify')


def test_quick_run_learns_and_writes_every_artifact(quick_run):
    run_dir, _ = quick_run
    assert run_dir.parent.name == 'quick' and run_dir.name.startswith('lr3e-3_bs16_ep6_val0.1_seed42')
    assert ARTIFACTS <= {p.name for p in run_dir.iterdir()}
    summary = json.loads((run_dir/'summary.json').read_text())
    assert summary['status'] == 'completed'
    assert summary['best_metrics']['valid_accuracy']['value'] >= 0.9
    results = json.loads((run_dir/'results.json').read_text())
    assert results['split'] == 'test' and results['accuracy'] >= 0.9 and results['n'] == 4*33
    epochs = json.loads((run_dir/'metrics.json').read_text())['epochs']
    assert [e['epoch'] for e in epochs] == list(range(1, len(epochs)+1))
    assert {'epoch', 'train_loss', 'valid_loss', 'train_accuracy', 'valid_accuracy'} == set(epochs[0])
    assert len(pd.read_csv(run_dir/'history.csv')) == len(epochs)
    assert len(pd.read_csv(run_dir/'predictions.csv')) == results['n']
    ckpt = torch.load(run_dir/'best_model.pth', weights_only=True)
    assert {'model', 'optimizer', 'scheduler', 'epoch', 'best_metric', 'config'} <= set(ckpt)
    assert ckpt['epoch'] == summary['best_metrics']['valid_accuracy']['epoch']
    assert ckpt['best_metric']['name'] == 'valid_accuracy'
    assert torch.load(run_dir/'final_model.pth', weights_only=True)['epoch'] == len(epochs)
    assert list((run_dir/'tensorboard').glob('events.out.tfevents.*'))


def test_console_and_log_carry_the_reference_lines(quick_run):
    run_dir, err = quick_run
    for line in ['[data] Found 4 classes:', '[train] Model: resnet18, Parameters: 11.2M (11.2M trainable)',
                 '[train] Epoch 1/6', '[train]   Train: loss=', '[train]   Val:   loss=',
                 '[train]   Saved best model (val_acc=', '[train] Best validation accuracy:', '[train] Total training time:',
                 f'[train] Model saved: {run_dir}/best_model.pth']:
        assert line in err, line
    log = (run_dir/'train.log').read_text().splitlines()
    console = [l for l in err.splitlines() if l.startswith('[')]
    assert [l.split(' ', 2)[2] for l in log if ' [' in l][:len(console)] == console   # same lines, with timestamps
    assert log[0][:4].isdigit()


def test_evaluate_writes_results_and_predictions(quick_run, tmp_path):
    import shutil
    run_dir = Path(shutil.copytree(quick_run[0], tmp_path/'run'))          # results.json is removed: on a copy
    code, out, err = cli('evaluate', run_dir, '--split', 'val')
    assert code == 0, err
    val = json.loads((run_dir/'results_val.json').read_text())
    assert val['split'] == 'val' and val['n'] == 4*33 and val['accuracy'] >= 0.9
    assert json.loads(out)['accuracy'] == val['accuracy']
    (run_dir/'results.json').unlink()
    assert cli('evaluate', run_dir)[0] == 0
    assert json.loads((run_dir/'results.json').read_text())['split'] == 'test'


@pytest.mark.parametrize('fmt', ['torchscript', 'onnx'])
def test_export_reproduces_pytorch(quick_run, fmt):
    import numpy as np
    run_dir, _ = quick_run
    code, out, err = cli('export', run_dir, '--format', fmt)
    assert code == 0, err
    path = Path(out.strip())
    assert path == run_dir/('model.pt' if fmt == 'torchscript' else 'model.onnx')
    # an independent check on fresh inputs, with a batch size other than the export's
    from trainbench.models import create_classifier
    model = create_classifier('resnet18', 4)
    model.load_state_dict(torch.load(run_dir/'best_model.pth', weights_only=True)['model'])
    x = torch.randn(3, 3, 48, 48)   # the run's img_size
    with torch.no_grad(): expected = model.eval()(x).numpy()
    if fmt == 'torchscript': got = torch.jit.load(str(path))(x).detach().numpy()
    else:
        import onnxruntime as ort
        got = ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'input0': x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_predict_of_a_missing_image(quick_run, tmp_path):
    "`trainbench predict` needs only the run directory (its agreement with evaluation: test_tasks.py); a missing image is named."
    run_dir, _ = quick_run
    code, _, err = cli('predict', run_dir, tmp_path/'missing.jpg')
    assert code == 1 and error_line(err) == f"error: predict: image not found: {tmp_path/'missing.jpg'}"
