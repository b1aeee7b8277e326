"""The per-notebook transaction: run locks, stale leftovers, the journalled commit, tidied notebooks."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import threading
import uuid
from pathlib import Path
from typing import Sequence

from dannlib.utils import atomic_write, file_digest

RUNNING_SUFFIX, JOURNAL_SUFFIX, STAGING_PREFIX = ".running.ipynb", ".commit.json", ".staging-"
RUN_LOCK_PREFIX, RUN_LOCK_SUFFIX = ".regenerate-", ".lock"  # + run id: held (flock) for a regeneration's life
REPORT_NAME = "regeneration.json"
# A leftover's owner (a run id): in an executed notebook or journal, a staging folder, a lock file.
_LEFTOVER = re.compile(r"\.(?:\d{2}_.+?\.(?P<nb>[^.]+)(?P<kind>\.running\.ipynb|\.commit\.json)"
                       r"|staging-(?P<stage>\d+(?:-[0-9a-f]{16})?)-\d{2}_.+|regenerate-(?P<lock>.+)\.lock)")
# A stderr output that is exactly one of these known warnings is dropped (as are progress-bar redraws).
_NOISE = re.compile(r"[^\n]*(?:TqdmWarning: IProgress not found\.[^\n]*\n(?:[ \t]+[^\n]*\n?)?"
                    r"|Kernel is running over TCP without encryption\.[^\n]*\n?)")


def new_run_id() -> str:
    """``<pid>-<16 random hex digits>``: a pid alone is reused (e.g. in a fresh PID namespace)."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:16]}"


def _lock_path(folder: Path, owner: str) -> Path:
    return Path(folder) / f"{RUN_LOCK_PREFIX}{owner}{RUN_LOCK_SUFFIX}"


class RunLock(contextlib.ExitStack):
    """A regeneration's :attr:`id`, alive while it holds ``.regenerate-<id>.lock`` (flock) in each folder."""

    def __init__(self, folders: Sequence[Path], run_id: str | None = None):
        super().__init__()
        self.id = run_id or new_run_id()
        try:
            for folder in dict.fromkeys(map(Path, folders)):
                folder.mkdir(parents=True, exist_ok=True)
                path = _lock_path(folder, self.id)
                self.callback(path.unlink, missing_ok=True)
                while True:  # another run's clean_stale may unlink the file between our open and flock: reopen
                    fh = self.enter_context(open(path, "a"))
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    with contextlib.suppress(FileNotFoundError):
                        if os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino:
                            break
        except BaseException:
            self.close()
            raise


def clean_stale(notebook_dirs: Sequence[Path], staging_parents: Sequence[Path]) -> list[Path]:
    """Replay the journals of runs nobody holds the lock of, then remove their leftovers (returned, not the locks)."""
    def alive(folder: Path, owner: str) -> bool:
        try:
            with open(_lock_path(folder, owner)) as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            return isinstance(exc, BlockingIOError)
        return False

    folders = [f for f in dict.fromkeys([*notebook_dirs, *staging_parents]) if f.is_dir()]
    found = [(p, m) for f in folders for p in sorted(f.iterdir()) if (m := _LEFTOVER.fullmatch(p.name))]
    stale = [(p, m) for p, m in found if not alive(p.parent, m["nb"] or m["stage"] or m["lock"])]
    for path, m in stale:
        if m["kind"] == JOURNAL_SUFFIX:
            with contextlib.suppress(ValueError, OSError, KeyError, TypeError):  # a malformed journal: removed below
                _apply_commit(json.loads(path.read_text()))
    for path, _ in stale:
        with contextlib.suppress(OSError):
            (shutil.rmtree if path.is_dir() else os.unlink)(path)
    return [p for p, m in stale if not m["lock"]]


def _apply_commit(plan: dict) -> None:
    """Move a notebook's staged outputs into place, skipping steps whose source is gone (a replay)."""
    for src, dst in plan.get("files", []):
        if os.path.lexists(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
    for src, dst, trash in plan.get("folders", []):
        if os.path.lexists(src):
            if os.path.lexists(dst):
                shutil.rmtree(trash, ignore_errors=True)
                os.rename(dst, trash)
            os.rename(src, dst)
    if os.path.lexists(plan["notebook"][0]):
        os.replace(*plan["notebook"])
    for staging in plan.get("cleanup", []):
        shutil.rmtree(staging, ignore_errors=True)


def digests(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): file_digest(p, "sha256") for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _plan_commit(executed: Path, target: Path, fig_stage: Path, figures: Path, res_stage: Path,
                 results: Path, copied: dict[str, str] | None = None) -> dict:
    """Each staged figure folder replaces its namesake whole; each record file the notebook wrote replaces its own:
    not a copy made for reading (``copied``: their :func:`digests` then) that it left as it was, which another run
    may have replaced since."""
    folders, files = [], []
    for entry in sorted(fig_stage.iterdir()) if fig_stage.is_dir() else []:
        if entry.is_dir():
            folders.append([str(entry), str(figures / entry.name), str(fig_stage / f".replaced-{entry.name}")])
        else:
            files.append([str(entry), str(figures / entry.name)])
    for rel, digest in digests(res_stage).items():
        dst = results / rel
        if (copied or {}).get(rel) == digest:
            continue  # read, not written: the live file may be newer (another run's commit)
        if not (dst.is_file() and file_digest(dst, "sha256") == digest):  # not the unchanged copy made for reading
            files.append([str(res_stage / rel), str(dst)])
    return {"notebook": [str(executed), str(target)], "files": files, "folders": folders,
            "cleanup": [str(fig_stage), str(res_stage)]}


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM back while the block runs: their handlers run after it. Deferred in Python (a handler
    that records them), not by the thread's signal mask, which other threads (tqdm's monitor) do not share."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread runs signal handlers
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)


def path_replacements(pairs: Sequence[tuple[str | os.PathLike, str]]) -> list[tuple[re.Pattern, str]]:
    """(absolute path prefix -> replacement) rules, longest first, matching a whole path from its start (not the tail
    of a longer path) up to a path boundary."""
    rules = {str(p).rstrip("/"): r for p, r in pairs if os.path.isabs(p) and str(p).rstrip("/")}
    return [(re.compile(r"(?<![\w.~/-])" + re.escape(p) + r"(?![\w.-])"), r)
            for p, r in sorted(rules.items(), key=lambda kv: -len(kv[0]))]


def lab_kernelspec() -> dict:
    """The ``kernelspec`` JupyterLab writes into a notebook it runs on this interpreter's ``python3``."""
    from ipykernel.kernelspec import get_kernel_dict

    spec = get_kernel_dict()
    return {"display_name": spec["display_name"], "language": spec["language"], "name": "python3"}


def normalize_notebook(path: str | os.PathLike) -> bool:
    """Rewrite ``path`` (atomically) as JupyterLab saves it; True when the file changed."""
    import nbformat

    path = Path(path)
    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    nb.metadata["kernelspec"] = lab_kernelspec()
    if (after := nbformat.writes(nb).rstrip("\n") + "\n") == before:
        return False
    mode = path.stat().st_mode & 0o7777
    with atomic_write(path) as fh:
        fh.write(after)
    os.chmod(path, mode)
    return True


def tidy_notebook(nb, name: str, parameters: dict, rules: Sequence[tuple[re.Pattern, str]]) -> None:
    """In place: papermill's metadata without paths, output paths rewritten by ``rules``, known
    stderr noise and progress-bar redraws dropped, the injected cell a comment recording
    ``parameters`` (tagged ``nbval-skip``: Run All takes the parameters cell), the lab's kernelspec."""
    def scrub(text):
        if isinstance(text, list):
            return [scrub(t) for t in text]
        for pattern, replacement in rules:
            text = pattern.sub(lambda _m, r=replacement: r, text)
        return text

    def noise(text: str) -> bool:
        lines = [s for s in re.split(r"[\r\n]", text) if s.strip()]
        return bool(_NOISE.fullmatch(text)) or not lines or "\r" in text and all(
            re.search(r"\d{1,3}%\|", s) for s in lines)

    nb.metadata["kernelspec"] = lab_kernelspec()
    nb.metadata.setdefault("papermill", {}).update(input_path=name, output_path=name, parameters=dict(parameters))
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags:
            cell.metadata["tags"] = list(dict.fromkeys([*tags, "nbval-skip"]))
            cell.source = ("# Parameters of this execution (dann_study regenerate, papermill); the parameters cell "
                           "above sets them for a run of your own:\n"
                           + "\n".join(f"#   {k} = {v!r}" for k, v in parameters.items()))
            cell.outputs = []
            if "id" in cell:  # not papermill's random id: keep the file's diff to what changed
                cell["id"] = "injected-parameters"
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.get("name") == "stderr" and noise(o.text))]
            for container in [*cell.outputs, *(o.get("data", {}) for o in cell.outputs)]:
                for key in ("text", "evalue", "traceback", "text/plain", "text/markdown", "text/html"):
                    if key in container:
                        container[key] = scrub(container[key])
