# Sphinx configuration of the documentation site. `make docs` (tools/docs.py) processes the notebooks with nbdev
# into _proc/ and runs `sphinx-build -c docs _proc _docs`; see tools/docs.py for why Sphinx + myst-nb.
from configparser import ConfigParser
from pathlib import Path

_ini = ConfigParser(interpolation=None)
_ini.read(Path(__file__).resolve().parents[1]/'settings.ini')
_cfg = _ini['DEFAULT']

project = _cfg['title']
author = _cfg['author']
copyright = _cfg['copyright']
release = version = _cfg['version']

extensions = ['myst_nb']
root_doc = 'index'
exclude_patterns = ['_site', 'jupyter_execute', '.*', '**/.*', '**/.ipynb_checkpoints']

# The notebooks' saved outputs are shown as they are: documentation never runs a notebook (no training).
nb_execution_mode = 'off'
# show_doc's output is Markdown: parse it as such, so its signature, docstring and parameter table render.
nb_render_markdown_format = 'myst'
# Widgets need a running kernel, and their JavaScript would come from a CDN: the offline site loads none.
nb_ipywidgets_js = {}
myst_enable_extensions = ['attrs_block', 'attrs_inline', 'colon_fence', 'deflist', 'html_image']
myst_heading_anchors = 3
# A notebook's numbered headings and nbdev's doc links produce no cross-reference warnings worth failing on.
suppress_warnings = ['myst.header', 'myst.xref_missing', 'mystnb.unknown_mime_type']

html_theme = 'sphinx_book_theme'
html_title = project
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    'home_page_in_toc': True,
    'show_toc_level': 2,
    'use_download_button': False,
    'use_fullscreen_button': False,
    'navigation_with_keys': False,
}
html_last_updated_fmt = None
html_static_path = ['_static']
html_css_files = ['trainbench.css']
