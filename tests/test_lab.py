"""The classify tutorial in a real JupyterLab, driven by headless Chromium: Find LR, Train, then Stop.

JupyterLab runs on 127.0.0.1 with token authentication on (a random token, passed in the URL), with its config,
runtime and settings folders in the test's temporary directory. Playwright drives the system Chromium
(`apt-get install chromium`; Playwright's own browser download needs the internet). Screenshots of each step are
saved in the test's temporary directory and copied to outputs/test-artifacts/lab-<step>.png.
"""
import json, os, re, secrets, shutil, signal, socket, subprocess, sys, urllib.error, urllib.request
from pathlib import Path

import pytest

from conftest import wait_for_http

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT/'outputs'/'test-artifacts'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-sync',
                 '--disable-background-networking', '--disable-component-update']
# Long enough that Stop lands in the middle of the run; tiny images so an epoch takes about a second.
PARAMS = {'interactive': True, 'synth_n': 8, 'lr_iters': 20,
          'overrides': {'data.img_size': 32, 'training.epochs': 200, 'output.tensorboard': False}}


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on 127.0.0.1 serving `tmp_path`, with token auth: (base URL, token, folder). Stopped afterwards."
    if not CHROMIUM:
        msg = "no system chromium: install it with `apt-get install chromium` (.ci/run does)"
        if os.environ.get('CI'): pytest.fail(msg)
        pytest.skip(msg)
    import papermill as pm
    work = tmp_path/'lab'
    work.mkdir()
    # The tutorial with this test's parameters injected, as papermill would run it, but left for the browser to run.
    pm.execute_notebook(str(ROOT/'nbs'/'tutorials'/'classify.ipynb'), str(work/'classify.ipynb'), prepare_only=True,
                        parameters={**PARAMS, 'data_dir': str(work/'data'), 'output_dir': str(work/'outputs')})
    token, port = secrets.token_hex(16), _free_port()
    home = tmp_path/'jupyter'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'JUPYTER_CONFIG_DIR': str(home/'config'),
           'JUPYTER_RUNTIME_DIR': str(home/'runtime'), 'JUPYTERLAB_SETTINGS_DIR': str(home/'settings'),
           'JUPYTERLAB_WORKSPACES_DIR': str(home/'workspaces'), 'PYTHONPATH': str(ROOT)}
    (home/'config').mkdir(parents=True)
    # Nothing from the internet: no news feed, no update check.
    (home/'config'/'jupyter_lab_config.py').write_text('c.LabApp.news_url = None\n'
                                                       'c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"\n')
    log = open(tmp_path/'lab.log', 'w')
    proc = subprocess.Popen([str(BIN/'jupyter'), 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
                             f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={work}',
                             '--ServerApp.port_retries=0'] + (['--allow-root'] if os.geteuid() == 0 else []),   # CI runs as root
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        wait_for_http(f'{base}/api/status?token={token}', proc, tmp_path/'lab.log', 90)
        # Token authentication is on: without the token the API refuses.
        with pytest.raises(urllib.error.HTTPError) as e: urllib.request.urlopen(f'{base}/api/contents', timeout=5)
        assert e.value.code == 403
        yield base, token, work
    finally:
        try: os.killpg(proc.pid, signal.SIGTERM)   # the server and the kernels it started
        except ProcessLookupError: pass
        try: proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()


def _button(page, label):
    return page.locator('button.jupyter-button').filter(has_text=re.compile(rf'^\s*{re.escape(label)}\s*$'))


@pytest.mark.timeout(600)
def test_tutorial_in_jupyterlab(lab, tmp_path):
    base, token, work = lab
    from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright
    shots = []
    def shot(page, name):
        shots.append(tmp_path/f'lab-{name}.png')
        page.screenshot(path=str(shots[-1]), full_page=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={'width': 1400, 'height': 1000})
        errors = []
        page.on('pageerror', lambda e: errors.append(str(e)))
        try:
            page.goto(f'{base}/lab/tree/classify.ipynb?token={token}', timeout=90_000)
            page.locator('.jp-NotebookPanel .jp-Notebook').first.wait_for(timeout=90_000)
            # JupyterLab may ask which kernel to start: the notebook's own, Python 3.
            try: page.locator('.jp-Dialog').get_by_role('button', name='Select').click(timeout=20_000)
            except PlaywrightTimeout: pass
            page.locator('.jp-StatusBar-Widget, .jp-StatusBar-TextItem').filter(has_text='Idle').first.wait_for(timeout=120_000)
            # Run > Run All Cells: the cells build the form, the finder, the dashboard, the results and the comparison.
            page.locator('#jp-MainMenu').get_by_text('Run', exact=True).click()
            page.locator('.lm-Menu-content').get_by_text('Run All Cells', exact=True).click()
            find = _button(page, 'Find LR')
            find.wait_for(timeout=180_000)
            shot(page, 'form')

            find.scroll_into_view_if_needed()
            find.click()
            status = page.locator('.widget-html-content').filter(has_text='suggestions:')
            status.wait_for(timeout=180_000)
            find.scroll_into_view_if_needed()
            shot(page, 'lr-finder')
            assert 'recommended: ' in status.first.inner_text()   # the widget says which mark it starts the slider on
            _button(page, 'Use this LR').click()
            page.locator('.widget-html-content').filter(has_text='set training.lr = ').wait_for(timeout=30_000)   # confirmed beside the button
            shot(page, 'lr-used')

            train = _button(page, 'Train')
            train.scroll_into_view_if_needed()
            train.click()
            rows = page.locator('table.tb-epochs tbody tr')
            page.wait_for_function("document.querySelectorAll('table.tb-epochs tbody tr').length >= 1", timeout=240_000)
            src1 = page.evaluate("[...document.querySelectorAll('img.widget-image')].map(i => i.src)")
            page.wait_for_function("document.querySelectorAll('table.tb-epochs tbody tr').length >= 3", timeout=240_000)
            src2 = page.evaluate("[...document.querySelectorAll('img.widget-image')].map(i => i.src)")
            rows.first.scroll_into_view_if_needed()
            shot(page, 'training')

            stop = _button(page, 'Stop')
            stop.scroll_into_view_if_needed()
            stop.click()
            page.locator('.widget-html-content').filter(has_text=re.compile(r'^stopped: ')).wait_for(timeout=120_000)
            n_rows = rows.count()
            _button(page, 'Resume').scroll_into_view_if_needed()
            shot(page, 'stopped')
        except Exception:
            shot(page, 'failure')   # what the page showed when a step timed out
            raise
        finally:
            browser.close()

    # The plot was redrawn while training ran (a new image), and the table had grown.
    assert src1 != src2 and len([s for s in src2 if s]) >= 2, (src1, src2)
    assert n_rows >= 3
    # The run directory says stopped, with the epochs the table showed and the checkpoint of the last one.
    run_dir, = (work/'outputs'/'classify'/'quick').iterdir()
    summary = json.loads((run_dir/'summary.json').read_text())
    assert summary['status'] == 'stopped', summary
    assert summary['total_epochs'] == n_rows < 200
    assert (run_dir/'final_model.pth').exists()
    # The LR picked with "Use this LR" went into the run's config.
    assert 'lr: 0.003' not in (run_dir/'config.yaml').read_text()
    assert not [e for e in errors if 'widget' in e.lower()], errors
    for s in shots: assert s.stat().st_size > 10_000, s
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for s in shots: shutil.copy(s, ARTIFACTS/s.name)   # lab-form, lab-lr-finder, lab-lr-used, lab-training, lab-stopped
