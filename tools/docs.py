#!/usr/bin/env python
"""Build the documentation site from the notebooks: `make docs` writes `_docs/index.html`.

With Quarto on PATH this is nbdev's own `nbdev_docs`. Quarto cannot be installed on these machines (no package
registry carries its binary), so the default path is:

1. nbdev's notebook processing, the same processors `nbdev_proc_nbs` runs (front matter, `show_doc` for every
   exported symbol, `#| hide` removal, doc links), into `_proc/` (pages named as nbdev names them: `core.html`).
   `nbdev_proc_nbs` itself is not called because it first tries to download and install Quarto.
2. Sphinx with myst-nb and sphinx-book-theme renders `_proc/` into `_docs/` (config: `docs/conf.py`).

Why Sphinx + myst-nb rather than MkDocs Material + mkdocs-jupyter: myst-nb renders a notebook's saved outputs
without running it (`nb_execution_mode = 'off'`, so docs never re-run training) and parses `text/markdown`
outputs as Markdown, which is exactly what `show_doc` emits, so its tables render as tables; cell tags
(`remove-input`, ...) carry nbdev's Quarto cell options; the toctree gives navigation in notebook order and
warns about unreachable pages; Sphinx's search is a static index searched in the browser, so it works offline.
sphinx-book-theme is the Jupyter Book theme, made for pages that are notebooks.

Where nbdev's defaults differ from what this site shows, on purpose:
- `#| export` cells keep their source (shown as code, without the directive): the literate notebooks explain
  the code next to it, and the reader should see it. `#| hide` and `#| default_exp` cells are removed.
- `show_doc` adds a parameter table (Type, Default, Details) built from the docments, after a one-line signature,
  and the `show_doc` cells of one exported cell come in source order (nbdev inserts them reversed).
- The first markdown cell keeps its prose: nbdev turns the whole cell into the title and summary.
"""
from __future__ import annotations

import argparse, atexit, html, json, os, re, shutil, subprocess, sys, time, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Files whose change invalidates every processed notebook.
TOOLING = [Path(__file__).resolve(), ROOT/'docs'/'conf.py', ROOT/'settings.ini']
ASSETS = {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp'}


def nbdev_order(nbs:Path)->list[Path]:
    "Every notebook under `nbs`, in nbdev's sidebar order: index first, then by folder and name."
    from nbdev.doclinks import nbglob
    files = nbglob(nbs, func=Path, file_re=r'\.ipynb$', skip_folder_re=r'(?:^[_.]|^www$)')
    def key(p):
        rel = p.relative_to(nbs)
        return (len(rel.parts) > 1, str(rel.parent), '00' if p.stem == 'index' else p.name)
    return sorted(files, key=key)


def page_name(rel:Path)->Path:
    "The page a notebook becomes, as nbdev names it: `21_rank.ipynb` -> `rank` (`_nbpath2html` without `.html`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(rel).with_suffix('')


# ---- nbdev processing ---------------------------------------------------------------------------------------

def _table_renderer():
    "nbdev's `show_doc` markdown with a one-line signature and the docments table (nbdev's `renderer` hook)."
    import inspect
    from fastcore.docments import DocmentTbl, _show_param, _fmt_anno
    from nbdev.showdoc import BasicMarkdownRenderer

    class TableRenderer(BasicMarkdownRenderer):
        def _repr_markdown_(self):
            md = super()._repr_markdown_()
            try: tbl = DocmentTbl(self.sym)._repr_markdown_()
            except Exception: tbl = ''
            if not tbl or self.sig is None: return md
            ps = ', '.join(_show_param(p) for n, p in self.sig.parameters.items() if n != 'self')
            ret = self.sig.return_annotation
            ret = '' if ret is inspect._empty else f' -> {_fmt_anno(ret)}'
            md = re.sub(r'```python\n.*?\n```', lambda m: f'```python\n{self.nm}({ps}){ret}\n```', md, count=1,
                        flags=re.DOTALL)
            return md + '\n\n' + tbl
    return TableRenderer


def _procs():
    "nbdev's docs processors (`FilterDefaults`), with the three changes the module docstring lists."
    import ast
    from nbdev.processors import FilterDefaults, rm_export, add_show_docs, exec_show_docs, _do_eval
    from nbdev.process import Processor
    from execnb.nbio import mk_cell

    def rm_hidden(cell):
        "Remove `#| hide` and `#| default_exp` cells; unlike nbdev's `rm_export`, keep exported source."
        if cell.directives_ and cell.directives_.keys() & {'hide', 'default_exp'}: del cell['source']

    class add_show_docs_in_order(add_show_docs):
        "nbdev's `add_show_docs`, with each exported cell's `show_doc` cells in source order."
        def begin(self):
            super().begin()
            i = 0
            while i < len(self.nb.cells):   # nbdev inserts each after the exported cell: reverse each run
                j = i
                while j < len(self.nb.cells) and getattr(self.nb.cells[j], 'has_sd', False): j += 1
                if j - i > 1: self.nb.cells[i:j] = self.nb.cells[i:j][::-1]
                i = j + 1

    class split_title(Processor):
        "Split the first markdown cell into its H1 + `>` summary (nbdev's front matter) and the prose after it."
        def begin(self):
            for k, c in enumerate(self.nb.cells):
                if c.cell_type != 'markdown': continue
                lines = c.source.splitlines()
                h = next((i for i, l in enumerate(lines) if re.match(r'#\s+\S', l)), None)
                if h is None: return
                end = h + 1
                while end < len(lines) and (lines[end].startswith('>') or not lines[end].strip()): end += 1
                rest = '\n'.join(lines[end:]).strip()
                c.source = '\n'.join(lines[:end]).strip()
                if rest: self.nb.cells.insert(k + 1, mk_cell(rest, 'markdown'))
                return

    class exec_show_docs_imports(exec_show_docs):
        """nbdev's `exec_show_docs` runs every cell that contains an import, even one that also trains a model (nbdev's
        FAQ asks for imports in a cell of their own). Here such a cell runs its top-level imports only: `show_doc`
        needs the names, the docs never re-run training, and the cell keeps the outputs the notebook saved."""
        def __call__(self, cell):
            if (self.nb.has_docs_ and hasattr(self, 'k') and _do_eval(cell) and 'show_doc' not in cell.source
                    and not cell.directives_.keys() & {'export', 'exports', 'exporti', 'exec_doc'}):
                trees = cell.parsed_()
                imports = [t for t in trees if isinstance(t, (ast.Import, ast.ImportFrom))]
                if len(imports) < len(trees):
                    if imports: self.k.run('\n'.join(ast.unparse(t) for t in imports))
                    if self.k.exc:
                        print(f"warning: {Path(self.nb.path_).name}: cell {cell.idx_}: {self.k.exc!r}", file=sys.stderr)
                        self.k.exc = None
                    return
            super().__call__(cell)

        def end(self):
            super().end()
            # IPython cleans each shell at exit with a reset that garbage-collects everything (0.3-1.5 s a shell
            # here, 36 s for 26 notebooks); this process ends right after the build, so skip it: stop the shell's
            # history thread and drop its exit hook.
            if not hasattr(self, 'k'): return
            atexit.unregister(self.k.atexit_operations)
            if getattr(self.k, 'history_manager', None) is not None and hasattr(self.k.history_manager, 'close'):
                self.k.history_manager.close()

    swap = {rm_export: rm_hidden, add_show_docs: add_show_docs_in_order, exec_show_docs: exec_show_docs_imports}
    return [split_title] + [swap.get(p, p) for p in FilterDefaults().procs()]
    return procs


def _cell_options(src:str):
    "Split leading Quarto `#| key: value` lines (what nbdev leaves for its renderer) from the code."
    lines, opts = src.splitlines(), {}
    while lines and re.match(r'\s*#\|', lines[0]):
        k, _, v = lines.pop(0).split('|', 1)[1].partition(':')
        opts[k.strip()] = v.strip().strip('"\'').lower()
    return opts, '\n'.join(lines)


def _relink(text:str, depth:int, base:str)->str:
    """nbdev's doc links (`[`x`](doc_host/doc_baseurl/core.html#x)`) -> HTML links relative to this page. A Markdown
    link to `core.html` would be taken by MyST as a cross-reference to a source file; raw HTML is kept as it is."""
    if not base: return text
    def link(m):
        code = html.escape(m[1])
        return (f'<a class="reference internal" href="{"../"*depth}{m[2]}">'
                f'<code class="docutils literal notranslate"><span class="pre">{code}</span></code></a>')
    return re.sub(r'\[`([^`]+)`\]\(' + re.escape(base) + r'([^)\s]*)\)', link, text)


def _anchor(m):
    "A show_doc heading, preceded by nbdev's anchor for it when MyST's slug (`myst_heading_anchors`) differs."
    nm = m[2].lower()
    slug = re.sub(r'[^\w\- ]', '', nm).replace(' ', '-')
    return (f'<span id="{nm}"></span>\n\n' if slug != nm else '') + f'{m[1]} {m[2]}'


def _defined(src:str)->list[str]:
    "The names nbdev's index (`_modidx.py`) gives a doc anchor: top-level functions and classes, and their methods."
    import ast
    try: tree = ast.parse(src)
    except SyntaxError: return []
    out = []
    for o in tree.body:
        if isinstance(o, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.append(o.name)
            if isinstance(o, ast.ClassDef):
                out += [f'{o.name}.{m.name}' for m in o.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return out


def to_myst(nb, depth:int, base:str):
    """nbdev's processed notebook -> what myst-nb renders: front matter as H1, Quarto options as cell tags, and an
    anchor for every name nbdev's doc links may point at: the show_doc entry, else the exported source."""
    from execnb.nbio import mk_cell
    cells, fm = [], getattr(nb, 'frontmatter_', {}) or {}
    shown = {m.lower() for c in nb.cells for o in c.get('outputs', [])
             for m in re.findall(r'^#+ (\S+)$', ''.join(o.get('data', {}).get('text/markdown', '')), re.M)}
    title = fm.get('title') or Path(nb.path_).stem
    head = f'# {title}'
    if fm.get('description'): head += f'\n\n{{.lead}}\n{fm["description"]}'
    cells.append(mk_cell(head, 'markdown'))
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.lstrip().startswith('---'): continue         # the front matter
        if c.cell_type == 'markdown':
            if 'THIS FILE WAS AUTOGENERATED' in c.source: continue
            c.source = _relink(c.source, depth, base)
        if c.cell_type == 'code':
            opts, c.source = _cell_options(c.source)
            if getattr(c, 'directives_', {}).keys() & {'export', 'exporti', 'exports'}:
                ids = [n.lower() for n in _defined(c.source) if n.lower() not in shown]
                shown.update(ids)
                if ids: cells.append(mk_cell(''.join(f'<span id="{i}"></span>' for i in ids), 'markdown'))
            tags = set(c.metadata.get('tags', []))
            if opts.get('include') == 'false': continue
            if opts.get('echo') == 'false': tags.add('remove-input')
            if opts.get('output') == 'false': tags.add('remove-output')
            if opts.get('code-fold') == 'true': tags.add('hide-input')
            if tags: c.metadata['tags'] = sorted(tags)
            for o in c.get('outputs', []):
                md = o.get('data', {}).get('text/markdown')
                if md is None: continue
                md = ''.join(md) if isinstance(md, list) else md
                # show_doc: nbdev's anchor (Quarto's heading id, which nbdev's doc links use) where MyST's heading
                # slug differs (`Task.fit`), its rule as HTML (a Markdown rule inside a cell output is invalid in
                # docutils), and Quarto's link attributes (`{target=...}`) dropped.
                md = re.sub(r'^(#+) (\S+)$', _anchor, md, flags=re.MULTILINE)
                md = re.sub(r'\A---\n', '<hr class="showdoc">\n', md)
                md = re.sub(r'\)\{target="_blank"[^}]*\}', ')', md)
                o['data']['text/markdown'] = _relink(md, depth, base)
                # The markdown is what a browser shows; the plain-text repr would be a second copy for search.
                o['data'].pop('text/plain', None)
            if not c.source.strip() and not c.get('outputs'): continue
        cells.append(c)
    nb.metadata.pop('widgets', None)   # widget state saved by nbdev's processing: nothing to show without a kernel
    for i, c in enumerate(cells): c['id'] = c.get('id') or f'docs-{i}'   # nbformat 4.5 wants every cell to have one
    nb.cells = cells
    return nb


def process(src:Path, dst:Path, depth:int, base:str)->str:
    "Run nbdev's processors on one notebook and write the myst-nb version to `dst`; returns its title."
    from execnb.nbio import read_nb, write_nb
    from nbdev.process import NBProcessor
    import nbdev.showdoc
    nbdev.showdoc.BasicMarkdownRenderer = TABLE_RENDERER
    nb = read_nb(src)
    NBProcessor(nb=nb, procs=PROCS).process()
    nb = to_myst(nb, depth, base)
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, dst)
    return nb.cells[0].source.splitlines()[0][2:]


TABLE_RENDERER = PROCS = None


def proc_nbs(nbs:Path, proc:Path, force:bool=False)->list[tuple[Path, str]]:
    "Process every notebook that changed since its last processing; returns (page, title) in nbdev order."
    global TABLE_RENDERER, PROCS
    from nbdev.config import get_config
    os.chdir(ROOT)
    cfg = get_config()
    base = f"{cfg.doc_host}{cfg.doc_baseurl}".rstrip('/') + '/'
    stamp = max(p.stat().st_mtime for p in TOOLING if p.exists())
    titles_f = proc/'.titles.json'
    titles = json.loads(titles_f.read_text()) if titles_f.exists() and not force else {}
    pages, seen = [], {}
    os.environ['IN_TEST'] = '1'     # as nbdev_proc_nbs does: notebooks may skip work when documenting
    # nbdev warns, with the whole cell, about each cell that mixes imports and code: exec_show_docs_imports handles them.
    warnings.filterwarnings('ignore', message='Found cells containing imports and other code')
    for src in nbdev_order(nbs):
        rel = src.relative_to(nbs)
        page = page_name(rel)
        if page in seen: sys.exit(f"error: {rel} and {seen[page]} both become the page {page}.html")
        seen[page] = rel
        dst = proc/page.with_suffix('.ipynb')
        key = str(page)
        if force or key not in titles or not dst.exists() or dst.stat().st_mtime < max(src.stat().st_mtime, stamp):
            if TABLE_RENDERER is None: TABLE_RENDERER, PROCS = _table_renderer(), _procs()
            t = time.time()
            titles[key] = process(src, dst, len(page.parts) - 1, base)
            print(f"processed {rel} -> {page}.html ({time.time()-t:.1f}s)", flush=True)
        pages.append((page, titles[key]))
    # Pictures next to the notebooks (a notebook's markdown may link them); outputs are inside the notebooks.
    for f in nbs.rglob('*'):
        if f.suffix.lower() in ASSETS and not any(p.startswith(('.', '_')) for p in f.relative_to(nbs).parts):
            d = proc/f.relative_to(nbs)
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, d)
    # Pages of notebooks that no longer exist.
    for f in proc.rglob('*.ipynb'):
        if f.relative_to(proc).with_suffix('') not in seen: f.unlink(); titles.pop(str(f.relative_to(proc).with_suffix('')), None)
    new = json.dumps(titles, indent=1)
    if not titles_f.exists() or titles_f.read_text() != new: titles_f.write_text(new)
    return pages


def write_toc(proc:Path, pages):
    "The navigation: a hidden toctree per folder, in nbdev's order, as the home page's last cell."
    sections = {}
    for page, title in pages:
        if str(page) == 'index': continue
        folder = page.parent.as_posix() if len(page.parts) > 1 else ''
        sections.setdefault(folder, []).append(page.as_posix())
    out = []
    for folder, items in sections.items():
        caption = re.sub(r'^\d+_', '', folder).replace('_', ' ').capitalize() if folder else 'Modules'
        out.append('```{toctree}\n:hidden:\n:caption: ' + caption + '\n\n' + '\n'.join(items) + '\n```')
    index = proc/'index.ipynb'
    nb = json.loads(index.read_text())
    cells = [c for c in nb['cells'] if 'nav-toc' not in c.get('metadata', {}).get('tags', [])]
    cells.append({'cell_type': 'markdown', 'id': 'nav-toc', 'metadata': {'tags': ['nav-toc']}, 'source': '\n\n'.join(out)})
    if cells != nb['cells']:
        nb['cells'] = cells
        index.write_text(json.dumps(nb, indent=1))


def build(out:Path=ROOT/'_docs', proc:Path=ROOT/'_proc', force:bool=False, quarto:bool|None=None):
    "Build the site into `out`."
    nbs = ROOT/'nbs'
    if quarto is None: quarto = shutil.which('quarto') is not None
    if quarto:
        subprocess.run([str(Path(sys.executable).parent/'nbdev_docs')], cwd=ROOT, check=True)
        return
    t = time.time()
    if force and proc.exists(): shutil.rmtree(proc)
    proc.mkdir(parents=True, exist_ok=True)
    pages = proc_nbs(nbs, proc, force)
    write_toc(proc, pages)
    t1 = time.time()
    # Reuse a fresh site: nothing Sphinx reads (the processed notebooks, docs/) changed since it was built.
    stamp = out/'.built'
    inputs = [f for f in [*proc.rglob('*'), *(ROOT/'docs').rglob('*')] if f.is_file()
              and not {'_site', '.doctrees', 'jupyter_execute'} & set(f.relative_to(ROOT).parts)]
    if stamp.exists() and max(f.stat().st_mtime for f in inputs) <= stamp.stat().st_mtime:
        print(f"docs: {out} is up to date ({len(pages)} pages); open {out/'index.html'}")
        return
    # Sphinx builds into _proc/_site (myst-nb writes output images beside its output folder, in
    # _proc/jupyter_execute), and the site is then copied to `out`.
    site = proc/'_site'
    r = subprocess.run([sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-j', 'auto', '-c', str(ROOT/'docs'),
                        '-d', str(proc/'.doctrees'), str(proc), str(site)], cwd=ROOT)
    if r.returncode: sys.exit(f"error: sphinx-build failed (exit {r.returncode})")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(site, out)
    stamp.touch()
    print(f"docs: {len(pages)} pages in {out} (nbdev processing {t1-t:.0f}s, sphinx {time.time()-t1:.0f}s); "
          f"open {out/'index.html'}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', type=Path, default=ROOT/'_docs', help='the site folder')
    p.add_argument('--force', action='store_true', help='process every notebook again')
    p.add_argument('--no-quarto', action='store_true', help='use Sphinx even when Quarto is installed')
    a = p.parse_args(argv)
    build(a.out, force=a.force, quarto=False if a.no_quarto else None)


if __name__ == '__main__':
    main()
    # The processing imported torch, fastai and an IPython shell per notebook: the interpreter's teardown of all that
    # takes seconds and saves nothing, so leave now (the site is written and closed).
    sys.stdout.flush(); sys.stderr.flush()
    os._exit(0)
