"""The study read as a person reads it: JupyterLab in a real (headless) browser.

- every committed notebook opens in JupyterLab served from the project root and shows its
  outputs and figures, with no error dialog, and is left as it was: its tab is not marked
  modified once its kernel has started (the file is what JupyterLab would save);
- Run All (Run menu) of notebook 01 in a copy of the project at another path runs every cell
  under the smoke profile taken from DANNLIB_PROFILE and writes its figures and records inside
  that copy only;
- dannlib's progress bars (tqdm.auto) render as ipywidgets bars there.

JupyterLab runs from this venv on 127.0.0.1 at a free port with a random token and its own
temporary Jupyter directories (tests/browser_helpers.py: start_lab); Debian's Chromium is
driven by Playwright (its own browser download is not used). Screenshots land in
.tmp/browser/ for a person to look at. Outside CI the tests skip when Chromium or Playwright
is missing; under CI (CI set) they fail instead: `.ci/run` installs Chromium."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

import browser_helpers as H

pytestmark = pytest.mark.slow

PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook shown in the main area
RUN_ALL_NOTEBOOK = "01_toy_blobs"  # the fastest notebook under smoke; it needs no data
WAIT_MS = 180_000  # bound on each wait for the UI (a hang fails instead of blocking CI)
RUN_WAIT_MS = 1_800_000  # bound on Run All under smoke (about 30 s on a 2-core CPU)

# What the shown notebook holds, counted in the page.
COUNT_JS = """(panel) => {
  const root = document.querySelector(panel);
  if (!root) return null;
  const all = (sel) => [...root.querySelectorAll(sel)];
  const imgs = all('.jp-OutputArea-output img');
  const outputs = all('.jp-OutputArea-output');
  return {
    cells: all('.jp-Notebook .jp-Cell').length,
    code_cells: all('.jp-Notebook .jp-CodeCell').length,
    prompts: all('.jp-CodeCell .jp-InputArea-prompt').map(e => e.textContent.trim()),
    outputs: outputs.length,
    images: imgs.length,
    images_drawn: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    tracebacks: outputs.map(e => e.textContent).filter(t => /Traceback|Error displaying widget/.test(t))
                       .map(t => t.slice(0, 2000)),
    text: outputs.map(e => e.textContent).join('\\n'),
    widget_bars: all('.jp-OutputArea-output .jupyter-widgets.widget-hprogress').length,
    dialogs: [...document.querySelectorAll('.jp-Dialog')].map(e => e.textContent.slice(0, 500)),
  };
}"""

KERNEL_IDLE_JS = """() => [...document.querySelectorAll('.jp-StatusBar-TextItem')]
  .some(e => /\\| Idle$/.test(e.textContent.trim()))"""

# Run All has ended: a dialog came up, or the kernel is idle, some cell has run and none is
# queued or running ("[*]").
RUN_ENDED_JS = """(panel) => {
  if (document.querySelector('.jp-Dialog')) return true;
  const prompts = [...document.querySelectorAll(panel + ' .jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent);
  const idle = [...document.querySelectorAll('.jp-StatusBar-TextItem')]
    .some(e => /\\| Idle$/.test(e.textContent.trim()));
  return idle && prompts.some(t => /\\[\\d+\\]/.test(t)) && !prompts.some(t => t.includes('*'));
}"""


def _missing(what: str) -> None:
    """Skip outside CI, fail under CI: there the browser test must run."""
    if H.in_ci():
        pytest.fail(f"{what} (CI={os.environ['CI']}: the browser test must run; .ci/run installs Chromium)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser():
    chromium = H.find_chromium()
    if chromium is None:
        _missing("no Chromium to drive: install Debian's (apt-get install chromium) or set DANNLIB_CHROMIUM "
                 "to a Chromium binary")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is missing: `make install` installs the test extra")
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=chromium, headless=True,
                               args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
    except Exception:
        pw.stop()
        raise
    yield b
    b.close()
    pw.stop()


@pytest.fixture(scope="module")
def shots():
    """.tmp/browser/, emptied once per run: screenshots and server logs for a person."""
    shutil.rmtree(H.ARTIFACTS, ignore_errors=True)
    H.ARTIFACTS.mkdir(parents=True)
    return H.ARTIFACTS


def _lab(root, home, shots, name, env):
    lab = H.start_lab(root, home, env)
    yield lab
    lab.stop()
    shutil.copy(lab.log, shots / f"jupyterlab-{name}.log")


@pytest.fixture(scope="module")
def project_lab(tmp_path_factory, shots, browser):
    """JupyterLab serving this checkout (the committed notebooks)."""
    env = H.clone_env(H.PROJECT, DANNLIB_PROFILE="smoke")
    yield from _lab(H.PROJECT, tmp_path_factory.mktemp("lab-project"), shots, "project", env)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A copy of the project (what a clone of the working tree holds) at another path, alone in
    its folder."""
    return H.copy_project(tmp_path_factory.mktemp("elsewhere") / "dann-study")


@pytest.fixture(scope="module")
def clone_lab(tmp_path_factory, shots, browser, clone):
    """JupyterLab serving the copy, as `make lab` there would: its kernels import the copy's
    dannlib (PYTHONPATH) and write with the notebooks' own defaults."""
    env = H.clone_env(clone, DANNLIB_PROFILE="smoke")
    yield from _lab(clone, tmp_path_factory.mktemp("lab-clone"), shots, "clone", env)


def _open(browser, lab, path):
    """A new page showing ``path`` (relative to the server root) in JupyterLab, its kernel idle."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    # ?reset: a fresh workspace, so that no earlier test's tabs are restored beside it
    page.goto(lab.url(f"lab/tree/{path}?reset"))
    page.wait_for_selector(f"{PANEL} .jp-Notebook .jp-Cell", state="attached", timeout=WAIT_MS)
    page.wait_for_function(KERNEL_IDLE_JS, timeout=WAIT_MS)
    return page


# The current tab shows unsaved changes (JupyterLab marks a notebook dirty as soon as its model
# differs from the file, e.g. when the started kernel's kernelspec differs from the file's).
DIRTY_JS = "() => !!document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')"
DIRTY_WAIT_MS = 5_000  # after the kernel is idle, how long a late change may take to show


def _wait(page, js, arg=None, timeout=WAIT_MS) -> bool:
    """Wait until ``js`` is true in the page; False when it is not within ``timeout`` ms (the
    assertions that follow then say what is missing)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(js, arg=arg, timeout=timeout)
        return True
    except PlaywrightTimeout:
        return False


def _counts(page):
    return page.evaluate(COUNT_JS, PANEL)


def _shot(page, path, scroll_to=None):
    if scroll_to is not None and page.locator(scroll_to).count():
        page.locator(scroll_to).first.scroll_into_view_if_needed()
    page.screenshot(path=str(path))


def _run_all(page):
    """Run > Run All Cells, through the menu bar; wait until it has ended."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    page.wait_for_function(RUN_ENDED_JS, arg=PANEL, timeout=RUN_WAIT_MS)


def _save(page):
    """File > Save Notebook; wait until the tab no longer shows unsaved changes."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Save Notebook$")).click()
    page.wait_for_selector(".lm-TabBar-tab.jp-mod-current:not(.jp-mod-dirty)", timeout=WAIT_MS)


def test_the_project_has_notebooks():
    assert H.NOTEBOOKS, f"no notebooks/NN_*.ipynb under {H.PROJECT}"


@pytest.mark.parametrize("name", [p.name for p in H.NOTEBOOKS])
def test_committed_notebook_renders_in_jupyterlab(browser, project_lab, shots, name):
    path = H.PROJECT / "notebooks" / name
    committed = path.read_bytes()
    nb = json.loads(committed)
    code = H.code_cells(nb)
    n_outputs = sum(len(c.get("outputs", [])) for c in code)
    n_images = H.image_outputs(nb)
    draws = [i for i, c in enumerate(code) if re.search(r"\bsave_figure\(|\bplt\.show\(", H.source(c))]

    page = _open(browser, project_lab, f"notebooks/{name}")
    try:
        # JupyterLab attaches the cells and decodes the figures while idle, after the first view
        _wait(page, f"(panel) => {{ const c = ({COUNT_JS})(panel); "
                    f"return c.code_cells >= {len(code)} && c.images_drawn >= {n_images}; }}", PANEL)
        seen = _counts(page)
        dirty = _wait(page, DIRTY_JS, timeout=DIRTY_WAIT_MS)
        stem = name.removesuffix(".ipynb")
        _shot(page, shots / f"render-{stem}.png")
        _shot(page, shots / f"render-{stem}-figure.png", scroll_to=f"{PANEL} .jp-OutputArea-output img")
    finally:
        page.close()
        project_lab.shutdown_kernels()

    assert not seen["dialogs"], f"JupyterLab showed a dialog: {seen['dialogs']}"
    assert not dirty, ("opening the notebook marked it modified (unsaved changes): the committed file is not what "
                       "JupyterLab would save; `python -m dann_study regenerate --normalize` rewrites it so")
    assert seen["code_cells"] == len(code)
    if draws:  # a reader opening the notebook sees its figures without running it
        assert n_images > 0, f"code cells {draws} draw figures but the committed notebook stores none (not run?)"
    if n_outputs:
        assert seen["outputs"] > 0, "the stored outputs are not shown"
    assert seen["images"] == n_images, f"{seen['images']} figures shown, the notebook stores {n_images}"
    assert seen["images_drawn"] == n_images, "a figure is not drawn (broken image)"
    assert not seen["tracebacks"], f"the notebook shows an error: {seen['tracebacks'][0]}"
    assert path.read_bytes() == committed, "opening the notebook in JupyterLab changed the file"


def test_run_all_in_a_clone_uses_smoke_and_writes_only_inside_it(browser, clone, clone_lab, shots):
    name = f"{RUN_ALL_NOTEBOOK}.ipynb"
    nb = json.loads((clone / "notebooks" / name).read_text())
    overrides = H.overriding_parameters(nb)
    assert not overrides, (
        f"notebooks/{name} sets parameters outside its parameters cell, so Run All ignores DANNLIB_PROFILE "
        f"and the parameters cell (and may write where the machine that last ran it did): " + "; ".join(overrides))

    clone_before, real_before = H.listing(clone), H.real_tree(RUN_ALL_NOTEBOOK)
    parent_before = sorted(os.listdir(clone.parent))

    page = _open(browser, clone_lab, f"notebooks/{name}")
    try:
        _shot(page, shots / f"run-all-{RUN_ALL_NOTEBOOK}-before.png")
        _run_all(page)
        seen = _counts(page)
        _shot(page, shots / f"run-all-{RUN_ALL_NOTEBOOK}-after.png", scroll_to=f"{PANEL} .jp-OutputArea-output img")
        if not seen["dialogs"]:
            _save(page)
    finally:
        page.close()
        clone_lab.shutdown_kernels()

    assert not seen["dialogs"], f"JupyterLab showed a dialog: {seen['dialogs']}"
    assert not seen["tracebacks"], f"Run All failed: {seen['tracebacks'][0]}"
    assert seen["prompts"] and all(re.fullmatch(r"\[\d+\]:", p) for p in seen["prompts"]), \
        f"not every code cell ran: {seen['prompts']}"
    assert seen["images"] > 0 and seen["images_drawn"] == seen["images"], "Run All drew no figure"
    assert "profile=smoke" in seen["text"], "the notebook did not take its profile from DANNLIB_PROFILE=smoke"

    saved = json.loads((clone / "notebooks" / name).read_text())  # as saved from the browser
    assert all(c.get("execution_count") for c in H.code_cells(saved))
    assert not [o for c in H.code_cells(saved) for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert H.image_outputs(saved) > 0

    problems = H.footprint_problems(clone, RUN_ALL_NOTEBOOK, clone_before, real_before, parent_before,
                                    also_allowed=[f"notebooks/{name}"])
    assert not problems, "\n".join(problems)


def test_progress_bars_are_widgets_in_jupyterlab(browser, clone, clone_lab, shots):
    """tqdm.auto, which dannlib's progress bars use, draws an ipywidgets bar in JupyterLab
    (ipywidgets installed, its JupyterLab extension loaded), not tqdm's text fallback."""
    nbformat = pytest.importorskip("nbformat")
    scratch = clone / "widget_check.ipynb"  # the server refuses hidden paths (.tmp/)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from tqdm.auto import tqdm  # what dannlib's progress bars use\n"
        "bar = tqdm(total=3, desc='widget check', leave=True)\n"
        "for _ in range(3):\n"
        "    bar.update(1)\n"
        "bar.close()\n"
        "import tqdm.notebook\n"
        "print('notebook bar:', isinstance(bar, tqdm.notebook.tqdm))")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, scratch)

    page = _open(browser, clone_lab, scratch.name)
    try:
        _run_all(page)
        _wait(page, f"(panel) => ({COUNT_JS})(panel).widget_bars > 0", PANEL, timeout=60_000)
        seen = _counts(page)
        _shot(page, shots / "widget-progress-bar.png")
    finally:
        page.close()
        clone_lab.shutdown_kernels()

    assert not seen["dialogs"], f"JupyterLab showed a dialog: {seen['dialogs']}"
    assert not seen["tracebacks"], seen["tracebacks"]
    assert seen["widget_bars"] == 1
    assert "notebook bar: True" in seen["text"], "tqdm.auto fell back to its text bar"
    assert "IProgress not found" not in seen["text"]
