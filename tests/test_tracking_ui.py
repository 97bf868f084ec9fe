"""In headless Chromium (the system `chromium`, through Playwright): the MLflow UI that `trainbench ui` starts lists a
sweep's runs and shows a metric chart; the sweep report renders without sideways scrolling at 1400 px.

The UI's server runs on 127.0.0.1 on a free port, started and stopped by the test. Screenshots go to
outputs/test-artifacts/ (mlflow-sweep.png, mlflow-run-metrics.png, report-1400.png).
"""
import json, os, shutil, signal, subprocess
from pathlib import Path

import pytest

from conftest import cli, wait_for_http
from test_lab import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, _free_port


@pytest.fixture
def tracked_sweep(task_run, tmp_path):
    "A sweep folder of two rank runs (the shared run and a copy), with its report, logged to a store in tmp_path."
    run = Path(task_run('rank')[0])
    sweep = tmp_path/'sweep'
    runs = {n: sweep/'runs'/n for n in ('first', 'second')}
    for d in runs.values(): shutil.copytree(run, d, ignore=shutil.ignore_patterns('*.pth', 'mlflow.json', 'tensorboard'))
    (sweep/'sweep.json').write_text(json.dumps({'name': 'ui', 'runs': {n: {'run_dir': str(d), 'status': 'completed'} for n, d in runs.items()}}))
    from trainbench.compare import write_report
    write_report(list(runs.values()), sweep, title='Sweep ui')
    code, out, err = cli('track', sweep, '--uri', tmp_path/'store')
    assert code == 0, err
    return sweep, tmp_path/'store', out


@pytest.fixture
def mlflow_ui(tracked_sweep, tmp_path):
    "`trainbench ui` on a free port of 127.0.0.1 over the sweep's store: its base URL. Stopped afterwards."
    sweep, store, _ = tracked_sweep
    port = _free_port()
    log = open(tmp_path/'ui.log', 'w')
    proc = subprocess.Popen([str(Path(os.sys.executable).parent/'trainbench'), 'ui', '--uri', str(store), '--port', str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, 'PYTHONPATH': str(Path(__file__).parents[1])})
    base = f'http://127.0.0.1:{port}'
    try:
        wait_for_http(f'{base}/health', proc, tmp_path/'ui.log', 180)
        yield base
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError: pass
        try: proc.wait(20)
        except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()


@pytest.fixture
def browser():
    if not CHROMIUM: pytest.skip('no system chromium: install it with `apt-get install chromium`')
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try: yield b
        finally: b.close()


def test_mlflow_ui_lists_sweep_runs_and_shows_a_metric_chart(tracked_sweep, mlflow_ui, browser):
    from mlflow.tracking import MlflowClient
    sweep, store, _ = tracked_sweep
    c = MlflowClient(f'sqlite:///{store}/mlflow.db')
    exp = c.get_experiment_by_name('sweep/ui')
    child = next(r for r in c.search_runs([exp.experiment_id]) if r.info.run_name == 'first')
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={'width': 1400, 'height': 900})
    page.set_default_timeout(60_000)
    page.goto(f'{mlflow_ui}/#/experiments/{exp.experiment_id}/runs')   # the training runs: the sweep's parent run
    page.get_by_text('ui sweep').first.wait_for()
    page.screenshot(path=str(ARTIFACTS/'mlflow-sweep.png'))
    page.goto(f'{mlflow_ui}/#/experiments/{exp.experiment_id}/runs/{child.info.run_id}/model-metrics')   # a child's charts
    page.get_by_text('results.accuracy').first.wait_for()
    for _ in range(10):   # the chart grid renders as it scrolls; the per-epoch metrics come after results.*
        if page.get_by_text('valid_loss').count(): break
        page.mouse.move(600, 500); page.mouse.wheel(0, 600); page.wait_for_timeout(500)
    page.get_by_text('valid_loss').first.scroll_into_view_if_needed()
    page.get_by_text('valid_loss').first.wait_for()
    try: page.locator('.js-plotly-plot').first.wait_for(timeout=20_000)   # for the screenshot: the charts drawn, not loading
    except Exception: pass
    page.screenshot(path=str(ARTIFACTS/'mlflow-run-metrics.png'))


def test_report_fits_1400px(tracked_sweep, browser):
    sweep = tracked_sweep[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={'width': 1400, 'height': 900})
    page.goto((sweep/'report.html').as_uri())
    assert page.evaluate('document.documentElement.scrollWidth') <= 1400
    assert page.locator('h2').all_inner_texts() == ['rank']
    img = page.locator('img').first
    assert img.evaluate('i => i.naturalWidth') > 0 and img.evaluate('i => i.getBoundingClientRect().width') >= 900   # readable, not a thumbnail
    page.screenshot(path=str(ARTIFACTS/'report-1400.png'), full_page=True)
