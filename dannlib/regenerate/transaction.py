"""The per-notebook transaction: stale leftovers, the journalled commit of a notebook's outputs, and tidying of executed notebooks (relative paths, no progress-bar noise)."""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import filecmp
import json
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from ..profiles import DEFAULT_PROFILE, PROFILES, check_profile
from ..utils import PROJECT_ROOT, atomic_write, machine_info
from .common import JOURNAL_SUFFIX, KNOWN_STDERR_NOISE, REPORT_NAME, RUNNING_SUFFIX, STAGING_PREFIX, _PROGRESS_SEGMENT  # noqa: F401


# ----------------------------------------------------------------------------- stale leftovers


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _owner_pid(name: str, pattern: re.Pattern) -> int | None:
    m = pattern.match(name)
    return int(m["pid"]) if m and m["pid"] and m["pid"].isdigit() else None


_RUNNING = re.compile(r"^\.(?P<stem>\d{2}_.+?)\.(?P<pid>[^.]+)" + re.escape(RUNNING_SUFFIX) + "$")
_JOURNAL = re.compile(r"^\.(?P<stem>\d{2}_.+?)\.(?P<pid>\d+)" + re.escape(JOURNAL_SUFFIX) + "$")
_STAGING = re.compile(r"^" + re.escape(STAGING_PREFIX) + r"(?P<pid>\d+)-.+$")


def _is_stale(name: str, pattern: re.Pattern) -> bool:
    if not pattern.match(name):
        return False
    pid = _owner_pid(name, pattern)
    return pid is None or not _pid_alive(pid)  # no pid in the name: an older version's leftover


def clean_stale(notebook_dirs: Sequence[Path], staging_parents: Sequence[Path]) -> list[Path]:
    """Complete the commits that a killed run left unfinished, then remove the executed-
    notebook temporaries and staging folders of processes that no longer exist. Returns
    what was removed or completed."""
    done = []
    for folder in dict.fromkeys(notebook_dirs):
        if not folder.is_dir():
            continue
        for journal in sorted(folder.iterdir()):
            if _is_stale(journal.name, _JOURNAL):
                with contextlib.suppress(ValueError, OSError):
                    _apply_commit(json.loads(journal.read_text()))
                journal.unlink(missing_ok=True)
                done.append(journal)
        for running in sorted(folder.iterdir()):
            if _is_stale(running.name, _RUNNING):
                running.unlink(missing_ok=True)
                done.append(running)
    for parent in dict.fromkeys(staging_parents):
        if not parent.is_dir():
            continue
        for staging in sorted(parent.iterdir()):
            if staging.is_dir() and _is_stale(staging.name, _STAGING):
                shutil.rmtree(staging, ignore_errors=True)
                done.append(staging)
    return done


# ----------------------------------------------------------------------------- commit


def _apply_commit(plan: dict) -> None:
    """Move a successful notebook's staged outputs into place. Idempotent: each step is
    skipped when its source is gone, so a journal can be replayed after a crash."""
    for src, dst in plan.get("files", []):
        if os.path.lexists(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
    for src, dst, trash in plan.get("folders", []):
        if os.path.lexists(src):
            if os.path.lexists(dst):
                if os.path.lexists(trash):
                    shutil.rmtree(trash, ignore_errors=True)
                os.rename(dst, trash)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(src, dst)
    src, dst = plan["notebook"]
    if os.path.lexists(src):
        os.replace(src, dst)
    for staging in plan.get("cleanup", []):
        shutil.rmtree(staging, ignore_errors=True)


def _plan_commit(executed: Path, target: Path, fig_stage: Path, figures: Path,
                 res_stage: Path, results: Path) -> dict:
    folders, files = [], []
    for entry in sorted(fig_stage.iterdir()) if fig_stage.is_dir() else []:
        if entry.name.startswith(".replaced-"):
            continue
        if entry.is_dir():
            folders.append([str(entry), str(figures / entry.name), str(fig_stage / f".replaced-{entry.name}")])
        else:
            files.append([str(entry), str(figures / entry.name)])
    for root, _dirs, names in os.walk(res_stage):
        for name in sorted(names):
            src = Path(root, name)
            dst = results / src.relative_to(res_stage)
            if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
                continue  # the copy made for reading, unchanged
            files.append([str(src), str(dst)])
    return {"notebook": [str(executed), str(target)], "files": files, "folders": folders,
            "cleanup": [str(fig_stage), str(res_stage)]}


def _shadow_results(results: Path, profile: str, res_stage: Path) -> None:
    """Copy ``results/profile/`` into the staging folder so that a notebook reads the
    records and networks of earlier notebooks (staging folders and the report left out)."""
    source = results / profile
    if not source.is_dir():
        return

    def ignore(folder, names):
        return [n for n in names if n.startswith(STAGING_PREFIX) or n == REPORT_NAME or n.startswith(".")]

    shutil.copytree(source, res_stage / profile, ignore=ignore, copy_function=shutil.copy2, dirs_exist_ok=True)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the block runs (they are delivered after it)."""
    mask = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)




# ----------------------------------------------------------------------------- tidying notebooks


def path_replacements(pairs: Sequence[tuple[str | os.PathLike, str]]) -> list[tuple[re.Pattern, str]]:
    """Compiled (absolute path prefix -> replacement) rules, longest prefix first; a prefix
    matches only up to a path boundary (so ``/a/results`` leaves ``/a/results2`` alone)."""
    rules = {}
    for prefix, replacement in pairs:
        prefix = str(prefix).rstrip("/")
        if prefix and os.path.isabs(prefix) and prefix != "/":
            rules[prefix] = replacement
    return [(re.compile(re.escape(p) + r"(?![\w.-])"), r) for p, r in sorted(rules.items(), key=lambda kv: -len(kv[0]))]


def scrub_text(text: str, rules: Sequence[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        text = pattern.sub(lambda _m, r=replacement: r, text)
    return text


def is_known_stderr_noise(text: str) -> bool:
    """True for a stderr output that is only a known warning or progress-bar redraws."""
    if any(p.match(text) for p in KNOWN_STDERR_NOISE):
        return True
    segments = [s for s in re.split(r"[\r\n]", text) if s.strip()]
    return not segments or all(_PROGRESS_SEGMENT.search(s) for s in segments) and "\r" in text


def tidy_notebook(nb, name: str, parameters: dict, rules: Sequence[tuple[re.Pattern, str]]) -> None:
    """In place: papermill's metadata without paths, paths in outputs rewritten by
    ``rules``, known stderr noise dropped, and the injected cell turned into a comment that
    records the parameters of this execution (tagged ``nbval-skip``): it assigns nothing, so a
    reader's Run All in JupyterLab takes the parameters cell (``$DANNLIB_PROFILE``, or its
    default, the profile the committed notebooks carry) and nothing overrides it."""
    papermill_meta = nb.metadata.setdefault("papermill", {})
    papermill_meta["input_path"] = name
    papermill_meta["output_path"] = name
    papermill_meta["parameters"] = dict(parameters)
    for cell in nb.cells:
        tags = list(cell.metadata.get("tags", []))
        if "injected-parameters" in tags:
            if "nbval-skip" not in tags:
                cell.metadata["tags"] = tags + ["nbval-skip"]
            cell.source = ("# Parameters of this execution (dannlib regenerate, papermill); the parameters cell "
                           "above sets them for a run of your own:\n"
                           + "\n".join(f"#   {k} = {v!r}" for k, v in parameters.items()))
            cell.outputs = []
            if "id" in cell:  # papermill draws a new random id each run: keep the file's diff to what changed
                cell["id"] = "injected-parameters"
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.get("output_type") == "stream" and out.get("name") == "stderr" and is_known_stderr_noise(out.get("text", "")):
                continue
            if "text" in out:
                out["text"] = scrub_text(out["text"], rules)
            data = out.get("data", {})
            for mime in ("text/plain", "text/markdown", "text/html"):
                if isinstance(data.get(mime), str):
                    data[mime] = scrub_text(data[mime], rules)
            if "evalue" in out:
                out["evalue"] = scrub_text(out["evalue"], rules)
            if "traceback" in out:
                out["traceback"] = [scrub_text(t, rules) for t in out["traceback"]]
            kept.append(out)
        cell.outputs = kept


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _display(path: str | os.PathLike, project: Path) -> str:
    """``path`` relative to the project when inside it, else only its last two parts: no
    machine path goes into a report."""
    path = Path(path)
    try:
        return path.relative_to(project).as_posix() or "."
    except ValueError:
        return "…/" + "/".join(path.parts[-2:])
