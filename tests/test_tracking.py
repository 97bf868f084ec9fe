"MLflow tracking: a run read back through MLflow's client; track is idempotent; a dead server costs one warning (a sweep: test_sweep.py)."
import json
from pathlib import Path

import pytest

from conftest import TINY, cli, last_line, run_cli, sets


@pytest.fixture
def tracking_on(monkeypatch):
    "Tracking on for this test (the suite turns it off), with no tracking server from the environment."
    monkeypatch.delenv('TRAINBENCH_TRACKING', raising=False)
    monkeypatch.delenv('MLFLOW_TRACKING_URI', raising=False)


def client(store):
    from mlflow.tracking import MlflowClient
    return MlflowClient(f'sqlite:///{store}/mlflow.db')


def test_run_logged_with_params_epochs_status_artifacts_and_track_is_idempotent(task_data, tmp_path, tracking_on):
    store = tmp_path/'store'
    code, out, err = cli('train', 'classify/quick', *sets(f'data.root_dir={task_data("classify")}', *TINY['classify'],
                                                          f'tracking.uri={store}', 'tracking.log_model=true'), '--output-dir', tmp_path/'out')
    assert code == 0, err
    run_dir = last_line(out)
    rid = json.loads((run_dir/'mlflow.json').read_text())[f'sqlite:///{store}/mlflow.db']
    c = client(store)
    r = c.get_run(rid)
    assert r.info.status == 'FINISHED' and r.info.run_name == run_dir.name
    assert c.get_experiment(r.info.experiment_id).name == 'classify/quick'
    assert r.data.params['training.epochs'] == '2' and r.data.params['data.img_size'] == '32' and r.data.params['task'] == 'classify'
    assert {k: r.data.tags[k] for k in ('task', 'template', 'status')} == {'task': 'classify', 'template': 'classify/quick', 'status': 'completed'}
    assert r.data.tags['trainbench_version'] and r.data.tags['command']
    epochs = json.loads((run_dir/'metrics.json').read_text())['epochs']
    for key in ('train_loss', 'valid_loss', 'valid_accuracy'):
        assert [(m.step, round(m.value, 6)) for m in c.get_metric_history(rid, key)] == [(e['epoch'], round(e[key], 6)) for e in epochs]
    results = json.loads((run_dir/'results.json').read_text())
    assert r.data.metrics['results.accuracy'] == pytest.approx(results['accuracy'])
    assert {'config.yaml', 'results.json', 'summary.json', 'history.png', 'predictions.csv'} <= {a.path for a in c.list_artifacts(rid)}
    import mlflow.pytorch, torch   # tracking.log_model: the best model, as an MLflow PyTorch model
    model = mlflow.pytorch.load_model(f'{r.info.artifact_uri}/model')
    best = torch.load(run_dir/'best_model.pth', weights_only=True)['model']
    assert all(torch.equal(v, best[k]) for k, v in model.state_dict().items())

    for _ in range(2):   # afterwards, twice: the same MLflow run, nothing duplicated
        code, out, err = cli('track', run_dir, '--uri', store)
        assert code == 0, err
        assert out.split('\t')[:2] == [str(run_dir), 'FINISHED'] and out.strip().endswith(rid)
    assert len(c.search_runs([r.info.experiment_id])) == 1
    assert len(c.get_metric_history(rid, 'valid_loss')) == len(epochs)

    code, out, err = cli('train', '--resume', run_dir, '--set', 'training.epochs=3', '--set', 'tracking.log_model=false')
    assert code == 0, err   # resumed for a third epoch: the same MLflow run continues
    assert len(c.search_runs([r.info.experiment_id])) == 1 and c.get_run(rid).info.status == 'FINISHED'
    assert [m.step for m in c.get_metric_history(rid, 'valid_loss')] == [1, 2, 3]


def test_unreachable_server_one_warning_run_completes(task_data, tmp_path, tracking_on):
    import socket
    with socket.socket() as s:   # a port nothing listens on
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    code, out, err = cli('train', 'classify/quick', *sets(f'data.root_dir={task_data("classify")}', *TINY['classify'],
                                                          f'tracking.uri=http://127.0.0.1:{port}'), '--output-dir', tmp_path/'out')
    assert code == 0, err
    assert json.loads((last_line(out)/'summary.json').read_text())['status'] == 'completed'
    warnings = [l for l in err.splitlines() if 'MLflow' in l]
    assert len(warnings) == 1 and f'127.0.0.1:{port}' in warnings[0] and 'trainbench track' in warnings[0], warnings


def test_bad_tracking_uri_is_one_line_before_training(tmp_path):
    code, out, err = cli('train', 'classify/quick', '--set', 'tracking.uri=htp://host:5000', '--output-dir', tmp_path/'out')
    assert code == 1 and err.strip().splitlines()[-1].startswith('error: --set tracking.uri=htp://host:5000: tracking.uri:')
    assert "unknown scheme 'htp'" in err and not (tmp_path/'out').exists()
