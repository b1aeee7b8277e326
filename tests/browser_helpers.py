"""Helpers for the tests that read the study as a person does: a copy of the project at
another path, file listings to tell where a run wrote, a JupyterLab server on loopback, and
the system Chromium that drives it (tests/test_browser.py, tests/test_clone_run_all.py).

Not a test module (pytest collects only test_*.py)."""
from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ci_env import in_ci

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(PROJECT.glob("notebooks/[0-9][0-9]_*.ipynb"))
# Where screenshots and server logs are kept for a person to look at (git-ignored).
ARTIFACTS = PROJECT / ".tmp" / "browser"

# Environment variables that send the notebooks' outputs elsewhere (figures, records, derived
# data, the run store); `make test` sets the first two. A run "as from a clone" must not have
# them: the notebooks' and dannlib's own defaults decide.
OUTPUT_VARS = ("DANNLIB_FIGURES", "DANNLIB_RESULTS", "DANNLIB_CACHE", "DANNLIB_STORE")
# Names a notebook takes from its parameters cell; a literal assignment to one of them in any
# other cell overrides what the reader set (DANNLIB_PROFILE, or the parameters cell itself).
PARAMETER_NAMES = ("profile", "seeds", "methods", "figures_dir", "results_dir", "data_root")


# --------------------------------------------------------------------------- the project

def data_root() -> Path | None:
    """The real data root ($DANNLIB_DATA, else ../shared/data beside the repository), if any."""
    candidates = [Path(os.environ["DANNLIB_DATA"]).expanduser()] if os.environ.get("DANNLIB_DATA") else []
    candidates.append(PROJECT.parent / "shared" / "data")
    return next((c.resolve() for c in candidates if (c / "MNIST" / "raw").is_dir()), None)


def project_files(root: Path = PROJECT) -> list[str]:
    """What a clone of the working tree holds: tracked files plus untracked files git does not
    ignore (uncommitted work included), relative to ``root``. Without git: every file but
    .git/, .venv/, .tmp/ and data/ (apart from data/README.md)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             check=True, capture_output=True).stdout
        names = sorted({n for n in out.decode().split("\0") if n})
        return [n for n in names if (root / n).is_file()]  # a deleted, not yet committed file is gone
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".tmp", "data"}
        names = []
        for p in root.rglob("*"):
            rel = p.relative_to(root)
            if p.is_file() and rel.parts[0] not in skip and "__pycache__" not in rel.parts:
                names.append(rel.as_posix())
        if (root / "data" / "README.md").is_file():
            names.append("data/README.md")
        return sorted(names)


def copy_project(dest: Path, root: Path = PROJECT) -> Path:
    """Copy the project's files (see project_files: no .git, .venv, caches or data) to ``dest``,
    which must not exist yet; return it."""
    dest.mkdir(parents=True)
    for name in project_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    return dest


def clone_env(clone: Path, **extra: str) -> dict[str, str]:
    """The environment of a reader working in ``clone``: this environment without the output
    redirections (OUTPUT_VARS), with ``clone`` first on PYTHONPATH (what the clone's own
    `make install`, an editable install of the clone, would give: its kernel imports the clone's
    dannlib and dann_study, not this checkout's), DANNLIB_DATA when the real data is found, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in OUTPUT_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(clone)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    root = data_root()
    if root is not None:
        env["DANNLIB_DATA"] = str(root)
    env.update(extra)
    return env


# --------------------------------------------------------------------------- listings

def listing(root: Path, subdirs=(".",)) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under root/subdir for each subdir,
    __pycache__ left out."""
    out = {}
    for sub in subdirs:
        base = root / sub
        if not base.exists():
            continue
        for p in base.rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                st = p.stat()
                out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def real_tree(stem: str) -> dict[str, tuple[int, int]]:
    """The listing of this checkout's figures/, results/ and notebooks/ that a run of notebook
    ``stem`` in a clone must leave alone. Under CI (nothing else runs) all of it; in a shared
    development tree, where other people's runs and edits write there too, the entries of
    figures/ and results/ that name the notebook or lie under results/smoke/."""
    full = listing(PROJECT, ("figures", "results", "notebooks"))
    if in_ci():
        return full
    return {p: v for p, v in full.items()
            if not p.startswith("notebooks/") and (stem in p or p.startswith("results/smoke/"))}


def footprint_problems(clone: Path, stem: str, clone_before: dict, real_before: dict,
                       parent_before: list[str], also_allowed=()) -> list[str]:
    """What is wrong with where a smoke-profile run of notebook ``stem`` in ``clone`` wrote,
    given listings taken before it. It must have written figures under the clone's
    figures/<stem>/ and something under its results/ (records, stored runs), nothing of the
    quick or paper profiles (results/quick/, results/paper/), records of profile smoke only,
    nothing else in the clone (apart from ``also_allowed`` prefixes), nothing in this checkout
    (real_tree) and nothing beside the clone. An empty list when all is well."""
    problems = []
    new = changed(clone_before, listing(clone))
    figures = [p for p in new if p.startswith(f"figures/{stem}/") and p.endswith(".png")]
    results = [p for p in new if p.startswith("results/")]
    if not figures:
        problems.append(f"no figure written under the clone's figures/{stem}/ (changed in the clone: {new})")
    if not results:
        problems.append(f"nothing written under the clone's results/ (changed in the clone: {new})")
    other_profiles = [p for p in results if p.startswith(("results/quick/", "results/paper/"))]
    if other_profiles:
        problems.append(f"a smoke run wrote outputs of another profile: {other_profiles}")
    for p in results:
        if p.startswith("results/smoke/") and p.endswith(".jsonl"):
            profiles = {json.loads(line).get("profile") for line in (clone / p).read_text().splitlines()
                        if line.strip()}
            if profiles != {"smoke"}:
                problems.append(f"{p} holds records of profiles {sorted(map(str, profiles))}, not only smoke")
    stray = outside(new, [f"figures/{stem}", "results", *also_allowed])
    if stray:
        problems.append(f"files written in the clone outside figures/{stem}/ and results/: {stray}")
    real_changed = changed(real_before, real_tree(stem)) + sorted(set(real_before) - set(real_tree(stem)))
    if real_changed:
        problems.append(f"files of the original checkout {PROJECT} changed: {real_changed}")
    beside = sorted(set(os.listdir(clone.parent)) - set(parent_before))
    if beside:
        problems.append(f"files written beside the clone in {clone.parent}: {beside}")
    return problems


def changed(before: dict, after: dict) -> list[str]:
    """Paths added or modified between two listings."""
    return sorted(p for p, v in after.items() if before.get(p) != v)


def outside(paths, allowed_prefixes) -> list[str]:
    """The paths that lie under none of the allowed prefixes."""
    return [p for p in paths
            if not any(p == a.rstrip("/") or p.startswith(a.rstrip("/") + "/") for a in allowed_prefixes)]


# --------------------------------------------------------------------------- notebooks

def code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def image_outputs(nb: dict) -> int:
    """How many outputs of the notebook carry an image."""
    return sum(1 for c in code_cells(nb) for o in c.get("outputs", [])
               if any(k.startswith("image/") for k in o.get("data", {})))


def overriding_parameters(nb: dict) -> list[str]:
    """Cells other than the one tagged ``parameters`` that assign a literal to a parameter name
    (PARAMETER_NAMES) at top level, e.g. papermill's ``injected-parameters`` cell left in a
    committed notebook: Run All then ignores DANNLIB_PROFILE and the parameters cell, and an
    absolute path in it sends the outputs to the machine that last ran the notebook. One line
    per assignment, naming the cell."""
    found = []
    for i, cell in enumerate(code_cells(nb)):
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags:
            continue
        text = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source(cell).splitlines())
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name) and t.id in PARAMETER_NAMES]
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue  # computed from something else (e.g. `seeds = seeds or ...`)
                if names and value is not None:
                    found.append(f"code cell {i} (tags {tags}): {', '.join(names)} = {value!r}")
    return found


# --------------------------------------------------------------------------- browser

def find_chromium() -> str | None:
    """$DANNLIB_CHROMIUM, else Debian's chromium (or chromium-browser) on PATH."""
    if os.environ.get("DANNLIB_CHROMIUM"):
        return shutil.which(os.environ["DANNLIB_CHROMIUM"])  # None when it is not an executable
    return next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser"))), None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- JupyterLab

# User settings of the test's JupyterLab (in its own settings directory): no news or update
# toast over the screenshots (the server has no network anyway), and no autosave, so that a
# notebook opened only to be looked at is never written back (JupyterLab marks a notebook
# modified on opening when it updates the kernel's display name in its metadata).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
}


@dataclass
class Lab:
    """A JupyterLab server started by start_lab; stop() ends it."""
    root: Path
    port: int
    token: str
    proc: subprocess.Popen
    log: Path
    home: Path
    stopped: bool = field(default=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "lab") -> str:
        sep = "&" if "?" in path else "?"
        return f"{self.base}/{path.lstrip('/')}{sep}token={self.token}"

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.base}/api/{path.lstrip('/')}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def shutdown_kernels(self) -> None:
        """End every session and kernel of the server (a notebook opened in the UI starts one)."""
        for s in self.api("sessions") or []:
            self.api(f"sessions/{s['id']}", method="DELETE")
        for k in self.api("kernels") or []:
            self.api(f"kernels/{k['id']}", method="DELETE")

    def stop(self) -> None:
        """Shut the kernels down, then the server (SIGTERM, then SIGKILL to its process group)."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            try:
                self.shutdown_kernels()
            except (OSError, urllib.error.URLError):
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def start_lab(root: Path, home: Path, env: dict[str, str], lifetime_s: int = 1800,
              ready_within_s: float = 180.0) -> Lab:
    """Start ``python -m jupyter lab`` of this interpreter (the project's venv) serving ``root``
    on 127.0.0.1 at a free port, with a random token and every Jupyter/IPython config, runtime,
    data, settings, workspace and checkpoint directory inside ``home`` (a fresh temporary
    directory), so that nothing of the user's set-up is read or written. Its lifetime is bounded
    twice: idle kernels are culled and the server shuts itself down after
    ``lifetime_s // 3`` seconds without kernels or activity; the caller stops it (Lab.stop) in
    a fixture finalizer. Returns once /api/status answers."""
    token = secrets.token_hex(24)
    port = free_port()
    dirs = {name: home / name for name in ("config", "runtime", "data", "settings", "workspaces",
                                           "ipython", "checkpoints")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    env = dict(env)
    env.update({
        "JUPYTER_CONFIG_DIR": str(dirs["config"]),
        "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
        "JUPYTER_DATA_DIR": str(dirs["data"]),
        "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
        "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
        "IPYTHONDIR": str(dirs["ipython"]),
        "JUPYTER_PLATFORM_DIRS": "1",
    })
    for name, values in LAB_SETTINGS.items():
        path = dirs["settings"] / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    idle = max(60, lifetime_s // 3)
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--ServerApp.shutdown_no_activity_timeout={idle}",
        f"--MappingKernelManager.cull_idle_timeout={idle}",
        "--MappingKernelManager.cull_interval=60",
        f"--FileCheckpoints.checkpoint_dir={dirs['checkpoints']}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.extension_manager=readonly",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI runs as root
    log = home / "jupyterlab.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    lab = Lab(root=root, port=port, token=token, proc=proc, log=log, home=home)
    deadline = time.monotonic() + ready_within_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {proc.returncode} before answering; "
                               f"its log ({log}):\n{lab.log_tail()}")
        try:
            lab.api("status")
            return lab
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            lab.stop()
            raise RuntimeError(f"jupyter lab did not answer on {lab.base} within {ready_within_s:.0f} s; "
                               f"its log ({log}):\n{lab.log_tail()}")
        time.sleep(0.5)
