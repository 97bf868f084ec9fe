"""The documentation site (`make docs`): built from the notebooks, served on 127.0.0.1, read in headless Chromium.

The build is incremental (only notebooks changed since the last build are processed again), so a fresh `_docs/`
is reused. One crawl from the home page loads every page once; the tests below check what it saw.
"""
import functools, http.server, json, os, re, shutil, subprocess, sys, threading, time
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT/'_docs'
ARTIFACTS = ROOT/'outputs'/'test-artifacts'
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
# Chromium on a machine without internet: no sandbox (CI runs as root) and none of its background connections.
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-sync',
                 '--disable-background-networking', '--disable-component-update']
SERVER_LIFETIME = 300   # seconds: the server stops itself even if the test process hangs

def _load_tool():
    "tools/docs.py (build tooling, not part of the package): the notebooks' order, page names and processing."
    import importlib.util
    spec = importlib.util.spec_from_file_location('trainbench_docs_tool', ROOT/'tools'/'docs.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


docs_tool = _load_tool()


def _title(nb_path):
    "A notebook's title as nbdev reads it: front matter `title:`, else the first markdown H1."
    nb = json.loads(Path(nb_path).read_text())
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'raw' and (m := re.search(r'^title:\s*(.+?)\s*$', src, re.M)): return m[1].strip('\'"')
        if c['cell_type'] == 'markdown' and (m := re.search(r'^#\s+(\S.*?)\s*$', src, re.M)): return m[1]
    return Path(nb_path).stem


def _cells(nb_path, directive):
    "The code of each cell of a notebook that carries `#| directive`, without its directive lines."
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        lines = ''.join(c['source']).splitlines()
        dirs = [l for l in lines if l.startswith('#|')]
        if c['cell_type'] == 'code' and any(re.match(rf'#\|\s*{directive}\b', l) for l in dirs):
            out.append('\n'.join(l for l in lines if not l.startswith('#|')).strip())
    return [o for o in out if o]


def _plain(md): return re.sub(r'[`*]', '', md).strip()


def _norm(s): return re.sub(r'\s+', ' ', s).strip()


NOTEBOOKS = docs_tool.nbdev_order(ROOT/'nbs')
PAGES = {docs_tool.page_name(p.relative_to(ROOT/'nbs')).as_posix() + '.html': p for p in NOTEBOOKS}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope='module')
def site():
    "Build (incrementally) and serve `_docs/` on 127.0.0.1 for this module's tests; stop the server afterwards."
    t = time.time()
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'docs.py'), '--no-quarto'], cwd=ROOT, capture_output=True,
                       text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    build_s = time.time() - t
    assert build_s < 180, f"the docs build took {build_s:.0f}s (at most 3 minutes)"
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    watchdog = threading.Timer(SERVER_LIFETIME, server.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try: yield f'http://127.0.0.1:{server.server_address[1]}/'
    finally:
        watchdog.cancel()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope='module')
def browser(site):
    if not CHROMIUM:
        msg = "no system chromium: apt-get install chromium (.ci/run does)"
        if os.environ.get('CI'): pytest.fail(msg)
        pytest.skip(msg)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try: yield b
        finally: b.close()


_PAGE_JS = '''() => ({
  title: document.title,
  h1: (document.querySelector('main h1, article h1') || {}).innerText || '',
  links: [...document.querySelectorAll('a[href]')].map(a => a.href),
  nav: [...document.querySelectorAll('nav.bd-docs-nav a.reference.internal')].map(a => a.href),
  ids: [...document.querySelectorAll('[id]')].map(e => e.id),
  pre: [...document.querySelectorAll('article pre')].map(e => e.innerText),
  rubrics: [...document.querySelectorAll('article p.rubric, article h3')].map(e => e.innerText.replace(/#$/, '').trim()),
  tables: [...document.querySelectorAll('article table')].map(t => t.innerText),
  text: (document.querySelector('article') || document.body).innerText,
  broken_images: [...document.querySelectorAll('img')].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
})'''


@pytest.fixture(scope='module')
def crawl(site, browser):
    "Every page reachable from the home page by internal links, loaded once: {url: what the page shows}."
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    external, errors, missing = [], [], []
    page.route('**/*', lambda route: route.continue_() if route.request.url.startswith(site)
               else (external.append(route.request.url), route.abort()))
    page.on('pageerror', lambda e: errors.append(str(e)))
    seen, queue = {}, [site + 'index.html']
    while queue:
        url = queue.pop(0)
        if url in seen: continue
        resp = page.goto(url)
        if resp is None or resp.status != 200:
            missing.append(url); seen[url] = None; continue
        page.wait_for_load_state('load')
        info = page.evaluate(_PAGE_JS)
        seen[url] = info
        if url.endswith('/index.html'):
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS/'docs-home.png'))
        for l in info['links']:
            l = urldefrag(l)[0]
            if l.startswith(site) and l.endswith('.html') and l not in seen and '/_' not in l[len(site):]: queue.append(l)
    page.close()
    return dict(site=site, pages=seen, external=external, errors=errors, missing=missing)


def test_home_page(crawl):
    home = crawl['pages'][crawl['site'] + 'index.html']
    assert home['h1'].strip() == _plain(_title(ROOT/'nbs'/'index.ipynb'))
    assert home['title'].startswith(home['h1'].strip())
    assert (ARTIFACTS/'docs-home.png').stat().st_size > 10_000
    # The navigation lists every notebook, in nbdev's order.
    nav = [urlparse(u).path.lstrip('/') for u in home['nav']]
    want = [p for p in PAGES if p != 'index.html']
    assert [p for p in nav if p in PAGES and p != 'index.html'] == want


def test_every_page_renders_with_its_title(crawl):
    for page, nb in PAGES.items():
        info = crawl['pages'].get(crawl['site'] + page)
        assert info, f"{page} ({nb.name}) is not reachable from the home page"
        assert info['h1'].strip() == _plain(_title(nb)), page
        assert info['title'].startswith(_plain(_title(nb))), page
        assert not info['broken_images'], (page, info['broken_images'])
    assert not crawl['errors'], crawl['errors']          # no JavaScript error on any page
    assert not crawl['external'], crawl['external']      # the site loads nothing from outside 127.0.0.1


def test_every_internal_link_resolves(crawl):
    site, pages = crawl['site'], crawl['pages']
    assert not crawl['missing'], crawl['missing']
    bad = []
    for url, info in pages.items():
        for link in info['links']:
            if not link.startswith(site): continue
            target, frag = urldefrag(link)
            if target.endswith('.html'):
                if target not in pages: bad.append((url, link, 'page not crawled')); continue
                if frag and frag not in pages[target]['ids']: bad.append((url, link, 'no such anchor'))
            else:
                path = SITE/urlparse(target).path.lstrip('/')
                if not (path.is_file() or (path/'index.html').is_file()): bad.append((url, link, 'no such file'))
    assert not bad, bad[:20]


def test_nbdev_directives(crawl):
    "`#| hide` cells are absent, `#| export` source is shown as code, no directive comment is shown."
    for page, nb in PAGES.items():
        info = crawl['pages'][crawl['site'] + page]
        pre = [_norm(p) for p in info['pre']]
        for code in _cells(nb, 'export'):
            assert any(_norm(code) in p for p in pre), (page, code[:200])
        for code in _cells(nb, 'hide'):
            assert _norm(code) not in pre, (page, code[:200])
        assert '#|' not in info['text'], page


def test_core_api_reference(crawl):
    "Every public name of trainbench.core has its show_doc entry, with the docments tables rendered."
    import inspect, trainbench.core
    core = crawl['pages'][crawl['site'] + 'core.html']
    api = [n for n in trainbench.core.__all__ if (inspect.isfunction(o := getattr(trainbench.core, n))
                                                 or inspect.isclass(o)) and o.__module__ == 'trainbench.core']
    assert len(api) >= 10, api
    missing = [n for n in api if n not in core['rubrics'] and n.lower() not in core['ids']]
    assert not missing, missing
    assert any('Details' in t for t in core['tables'])     # a show_doc parameter table
    assert 'A hint naming the closest valid option.' in core['text']


@pytest.mark.parametrize('symbol', ['MemoryBank', 'FeatureCache'])
def test_search(site, browser, symbol):
    "The search box finds a class by name and links to the page that documents it."
    page = browser.new_page()
    try:
        page.goto(site + 'index.html')
        page.keyboard.press('Control+k')            # the theme's search dialog, as a reader opens it
        box = page.locator('#pst-search-dialog input[name="q"]')
        box.fill(symbol)
        box.press('Enter')
        page.wait_for_url('**/search.html?q=*')
        # Sphinx's search fills the list, then says how many pages it found.
        page.wait_for_function("(document.querySelector('#search-results p.search-summary') || {}).innerText",
                               timeout=20_000)
        hrefs = [urlparse(h).path.lstrip('/') for h in
                 page.locator('#search-results ul.search li a').evaluate_all('as => as.map(a => a.href)')]
        want = [p for p, nb in PAGES.items() if any(re.search(rf'^class {symbol}\b', c, re.M) for c in _cells(nb, 'export'))]
        assert want, f"no notebook defines {symbol}"
        assert set(want) & set(hrefs), (symbol, want, hrefs)
    finally: page.close()


def test_saved_outputs_are_kept_and_hidden_cells_dropped(tmp_path):
    "The processing keeps a notebook's saved outputs (a plot) as they are, and drops `#| hide` cells (no Sphinx here)."
    import base64, nbformat
    png = base64.b64encode((ROOT/'docs'/'_static'/'trainbench.css').read_bytes()).decode()   # any bytes will do
    nb = nbformat.v4.new_notebook(metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3',
                                                           'language': 'python'}})
    nb.cells = [nbformat.v4.new_markdown_cell('# plots\n> A notebook with a saved plot.\n\nWhy it plots.'),
                nbformat.v4.new_code_cell('#| hide\nsecret = 1'),
                nbformat.v4.new_code_cell('plot_history(run)', outputs=[nbformat.v4.new_output(
                    'display_data', data={'image/png': png, 'text/plain': '<Figure>'})])]
    nbformat.write(nb, tmp_path/'plots.ipynb')
    docs_tool.TABLE_RENDERER, docs_tool.PROCS = docs_tool._table_renderer(), docs_tool._procs()
    title = docs_tool.process(tmp_path/'plots.ipynb', tmp_path/'out'/'plots.ipynb', 0, '')
    assert title == 'plots'
    out = json.loads((tmp_path/'out'/'plots.ipynb').read_text())
    src = [''.join(c['source']) for c in out['cells']]
    assert src[0].startswith('# plots') and 'A notebook with a saved plot.' in src[0] and 'Why it plots.' in src
    assert not any('secret' in s or '#|' in s for s in src)
    assert [o['data']['image/png'] for c in out['cells'] for o in c.get('outputs', [])] == [png]
