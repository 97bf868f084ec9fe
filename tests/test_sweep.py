"Sweeps on Dask: an embedded LocalCluster from the CLI, and a real scheduler with two worker processes, one killed."
import json, os, signal, subprocess, sys, threading, time
from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, cli, error_line, run_cli

TINY = {'data.img_size': 32, 'training.epochs': 1, 'output.tensorboard': False, 'data.num_workers': 0}


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from trainbench.task import get_task
    return get_task('classify').synth(tmp_path_factory.mktemp('sweepdata')/'shapes', n=6, seed=0, img_size=32)


def write_sweep(path, data, experiments):
    over = ', '.join(f'{k}: {json.dumps(v)}' for k, v in {**TINY, 'data.root_dir': str(data)}.items())
    exps = ''.join(f'  {k}: {{{", ".join(f"{kk}: {json.dumps(vv)}" for kk, vv in v.items())}}}\n' for k, v in experiments.items())
    path.write_text(f'base: classify/quick\noverrides: {{{over}}}\nexperiments:\n{exps}')
    return path


def check_mlflow(store, sweep_dir):
    "The sweep in MLflow: a parent run with a child per run (params, per-epoch metrics, status, the executed notebook)."
    from mlflow.tracking import MlflowClient
    from trainbench.cli import main
    c = MlflowClient(f'sqlite:///{store}/mlflow.db')
    exp = c.get_experiment_by_name('sweep/s')
    runs = {r.info.run_name: r for r in c.search_runs([exp.experiment_id])}
    parent = runs.pop('s')
    assert parent.info.status == 'FINISHED' and sorted(runs) == ['broken', 'lr1']
    assert {r.data.tags['mlflow.parentRunId'] for r in runs.values()} == {parent.info.run_id}
    assert {'report.html', 'sweep.json'} <= {a.path for a in c.list_artifacts(parent.info.run_id)}
    lr1, broken = runs['lr1'], runs['broken']
    assert lr1.info.status == 'FINISHED' and lr1.data.params['training.lr'] == '0.001' and lr1.data.tags['template'] == 'classify/quick'
    assert [m.step for m in c.get_metric_history(lr1.info.run_id, 'valid_loss')] == [1]
    assert 'train_classify.ipynb' in {a.path for a in c.list_artifacts(lr1.info.run_id)}   # the executed notebook
    assert broken.info.status == 'FAILED' and broken.data.tags['status'] == 'failed'
    assert main(['track', str(sweep_dir), '--uri', str(store)]) == 0   # again afterwards: nothing new
    assert len(c.search_runs([exp.experiment_id])) == 3 and len(c.get_metric_history(lr1.info.run_id, 'valid_loss')) == 1


def test_local_sweep_failure_isolated_rerun_skips_completed_and_report(tiny_data, tmp_path):
    sweep = write_sweep(tmp_path/'s.yaml', tiny_data, {'lr1': {'training.lr': 1e-3}, 'lr3': {'training.lr': 3e-3},
                                                        'broken': {'data.root_dir': str(tmp_path/'nowhere')}})
    # lr3 only shows in --list: running it would add time, not coverage

    code, listed, _ = cli('sweep', sweep, '--list')
    assert code == 0 and [l.split()[0] for l in listed.splitlines()[1:]] == ['lr1', 'lr3', 'broken']
    store = tmp_path/'mlflow'   # this sweep is tracked (the suite's runs are not): its MLflow runs are checked below
    res = run_cli('sweep', sweep, '--output-dir', tmp_path/'out', '--workers', '2', '--only', 'lr1', '--only', 'broken',
                  '--set', f'tracking.uri={store}', env={'TRAINBENCH_TRACKING': 'on'})
    assert res.returncode == 1, res.stderr          # one run failed: the sweep says so, after finishing the others
    sweep_dir = tmp_path/'out'/'sweeps'/'s'
    state = json.loads((sweep_dir/'sweep.json').read_text())['runs']
    assert {k: v['status'] for k, v in state.items()} == {'lr1': 'completed', 'broken': 'failed'}
    check_mlflow(store, sweep_dir)
    broken = Path(state['broken']['run_dir'])
    nb = json.loads((broken/'train_classify.ipynb').read_text())           # the failed run keeps its notebook, with the error
    assert any(o.get('output_type') == 'error' for c in nb['cells'] for o in c.get('outputs', []))
    assert 'does not exist' in state['broken']['error']
    table = pd.read_csv(sweep_dir/'comparison.csv')
    assert sorted(table.status) == ['completed', 'failed'] and 'data.root_dir' in table.columns
    html = (sweep_dir/'report.html').read_text()
    assert '<h2>classify</h2>' in html and (sweep_dir/'plots_classify.png').exists()
    assert 'train_classify.html' in html and (broken/'train_classify.html').exists()   # the notebook rendered for a browser
    assert res.stdout.strip().splitlines()[-1] == str(sweep_dir/'report.html')

    again = run_cli('sweep', sweep, '--output-dir', tmp_path/'out', '--only', 'lr1', '--only', 'broken')
    state2 = json.loads((sweep_dir/'sweep.json').read_text())['runs']
    assert state2['lr1']['run_dir'] == state['lr1']['run_dir']             # completed with the same config: skipped
    assert state2['broken']['run_dir'] != state['broken']['run_dir'] and broken.exists()   # rerun beside the failed one
    assert 'lr1: completed before with the same config, skipped' in again.stderr

    code, out, err = cli('compare', sweep_dir/'runs', '--output', tmp_path/'c.csv')
    assert code == 0, err
    assert len(pd.read_csv(tmp_path/'c.csv')) == 3 and 'best accuracy:' in out


def test_sweep_bad_input_fails_before_anything_runs(tiny_data, tmp_path):
    bad_tpl = write_sweep(tmp_path/'t.yaml', tiny_data, {'ok': {}, 'x': {'base': 'classify/nope'}})
    code, _, err = cli('sweep', bad_tpl, '--output-dir', tmp_path/'out')
    assert code == 1 and "experiment 'x': classify/nope: not a config file or a bundled template" in error_line(err)
    bad_key = write_sweep(tmp_path/'k.yaml', tiny_data, {'x': {'training.lrr': 1}})
    code, _, err = cli('sweep', bad_key, '--output-dir', tmp_path/'out')
    assert "experiment 'x'" in error_line(err) and "training.lrr: unknown key (did you mean 'lr'?)" in err
    assert not (tmp_path/'out').exists()
    write_sweep(tmp_path/'ok.yaml', tiny_data, {'ok': {}})
    t0 = time.time()
    code, _, err = cli('sweep', tmp_path/'ok.yaml', '--scheduler', 'tcp://127.0.0.1:9', '--output-dir', tmp_path/'out2')
    assert code == 1 and time.time() - t0 < 30 and not (tmp_path/'out2').exists()
    assert error_line(err).startswith('error: --scheduler tcp://127.0.0.1:9: cannot reach the Dask scheduler')


def test_notebook_without_parameters_cell_is_refused(tmp_path):
    import nbformat
    from trainbench.core import TrainbenchError
    from trainbench.experiments import run_notebook
    nb = tmp_path/'bare.ipynb'
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('x = 1')]), nb)
    with pytest.raises(TrainbenchError, match="no cell tagged 'parameters'"):
        run_notebook('classify/quick', notebook=nb, output_dir=tmp_path)


def test_bundled_sweeps_expand():
    from trainbench.sweep import expand, list_sweeps, load_sweep
    for name in list_sweeps():
        sw, path = load_sweep(name)
        assert expand(sw, path), name


def _start(args, log):
    return subprocess.Popen([str(BIN/'dask'), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(p):
    with __import__('contextlib').suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)


def test_real_scheduler_two_workers_one_killed(tiny_data, tmp_path):
    "A dask scheduler and two workers on 127.0.0.1; one worker dies mid-sweep; every run is accounted for."
    from trainbench.sweep import run_sweep
    sfile, log = tmp_path/'scheduler.json', open(tmp_path/'dask.log', 'w')
    sched = _start(['scheduler', '--host', '127.0.0.1', '--port', '0', '--no-dashboard', '--scheduler-file', str(sfile)], log)
    workers = []
    try:
        for _ in range(60):
            if sfile.exists() and sfile.stat().st_size: break
            time.sleep(0.5)
        address = json.loads(sfile.read_text())['address']
        assert address.startswith('tcp://127.0.0.1:')
        workers = [_start(['worker', address, '--nthreads', '1', '--host', '127.0.0.1', '--no-dashboard', '--name', f'w{i}',
                           '--death-timeout', '60'], log) for i in range(2)]
        sweep = write_sweep(tmp_path/'d.yaml', tiny_data, {f'r{i}': {'seed': i, 'training.epochs': 3} for i in range(2)})
        killed = {}
        def kill_when_running():
            "Once a run is training, kill a worker that is executing one (its whole process group: nanny, worker, kernel)."
            from distributed import Client
            with Client(address, timeout='10s') as c:
                deadline = time.time() + 240
                while time.time() < deadline and not killed:
                    running = [p for p in (tmp_path/'out').glob('sweeps/d/runs/*/summary.json')
                               if json.loads(p.read_text() or '{}').get('status') == 'running']
                    busy = [w['name'] for a, w in c.scheduler_info()['workers'].items() if c.processing().get(a)]
                    if running and busy:
                        _stop(workers[int(busy[0][1:])]); killed['worker'] = busy[0]
                    time.sleep(0.3)
        t = threading.Thread(target=kill_when_running, daemon=True); t.start()
        res = run_sweep(sweep, tmp_path/'out', scheduler=address)
        t.join(timeout=5)
        assert killed, 'no two runs were ever running at once'
        statuses = {k: v['status'] for k, v in res.runs.items()}
        state = json.loads((res.dir/'sweep.json').read_text())['runs']
        assert {k: v['status'] for k, v in state.items()} == statuses == {'r0': 'completed', 'r1': 'completed'}
        retried = [k for k, v in state.items() if v.get('retried')]       # the killed run went to the other worker...
        attempts = list((res.dir/'runs').glob('*.attempt1'))              # ...and its dead attempt is kept, marked failed
        assert len(retried) == 1 and [a.name for a in attempts] == [f'{retried[0]}.attempt1'], (retried, attempts)
        assert json.loads((attempts[0]/'summary.json').read_text())['status'] == 'failed'
    finally:
        for p in workers + [sched]: _stop(p)
        log.close()
