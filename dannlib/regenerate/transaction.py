"""The per-notebook transaction: stale leftovers, the journalled commit of a notebook's outputs, and tidying of executed notebooks (relative paths, no progress-bar noise)."""
from __future__ import annotations

import contextlib
import fcntl
import filecmp
import json
import os
import re
import shutil
import signal
import stat
import uuid
from pathlib import Path
from typing import Iterator, Sequence

from ..utils import atomic_write
from .common import (JOURNAL_SUFFIX, KNOWN_STDERR_NOISE, REPORT_NAME, RUN_LOCK_PREFIX, RUN_LOCK_SUFFIX,  # noqa: F401
                     RUNNING_SUFFIX, STAGING_PREFIX, _PROGRESS_SEGMENT)


# ----------------------------------------------------------------------------- stale leftovers


def new_run_id() -> str:
    """A name unique to one regeneration: its pid (for a reader) and 16 random hex digits
    (a pid alone is reused, e.g. by a container restarted in a fresh PID namespace)."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:16]}"


def _lock_path(folder: Path, owner: str) -> Path:
    return Path(folder) / f"{RUN_LOCK_PREFIX}{owner}{RUN_LOCK_SUFFIX}"


class RunLock:
    """One regeneration's identity (:attr:`id`, in the names of its staging folders, executed
    notebooks and journals) and its liveness: a lock file ``.regenerate-<id>.lock`` in each of
    its output folders, held with ``fcntl.flock`` for the run's life. The kernel releases a
    flock when its holder dies, however it dies, so a leftover whose lock nobody holds is a
    dead run's, whatever pid it names. A context manager; :meth:`release` removes the files."""

    def __init__(self, folders: Sequence[Path], run_id: str | None = None):
        self.id = run_id or new_run_id()
        self._held: list[tuple[Path, int]] = []
        try:
            for folder in dict.fromkeys(Path(f) for f in folders):
                folder.mkdir(parents=True, exist_ok=True)
                path = _lock_path(folder, self.id)
                fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
                self._held.append((path, fd))
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        for path, fd in self._held:
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
        self._held = []

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _owner_alive(folder: Path, owner: str | None) -> bool:
    """Whether the regeneration ``owner`` (a run id) still holds its lock in ``folder``.
    An older version's name holds a pid alone and no lock: it counts as live only while a
    process of that pid exists and is not this one (this process never makes such names),
    so that an upgrade does not remove a running older regeneration's staging."""
    if owner and owner.isdigit():
        pid = int(owner)
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    if not owner or not _RUN_ID.fullmatch(owner):
        return False
    try:
        fd = os.open(_lock_path(folder, owner), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (releases the lock just taken)
    return False


_RUN_ID = re.compile(r"\d+-[0-9a-f]{16}")
_RUNNING = re.compile(r"^\.(?P<stem>\d{2}_.+?)\.(?P<owner>[^.]+)" + re.escape(RUNNING_SUFFIX) + "$")
_JOURNAL = re.compile(r"^\.(?P<stem>\d{2}_.+?)\.(?P<owner>[^.]+)" + re.escape(JOURNAL_SUFFIX) + "$")
_STAGING = re.compile(r"^" + re.escape(STAGING_PREFIX) + r"(?P<owner>\d+(?:-[0-9a-f]{16})?)-(?P<stem>\d{2}_.+)$")
_LOCK = re.compile(r"^" + re.escape(RUN_LOCK_PREFIX) + r"(?P<owner>.+)" + re.escape(RUN_LOCK_SUFFIX) + "$")


def _is_stale(folder: Path, name: str, pattern: re.Pattern) -> bool:
    m = pattern.match(name)
    return bool(m) and not _owner_alive(folder, m["owner"])


def clean_stale(notebook_dirs: Sequence[Path], staging_parents: Sequence[Path]) -> list[Path]:
    """Complete the commits that a killed run left unfinished, then remove the executed-
    notebook temporaries and staging folders of runs that are over (their :class:`RunLock`
    is not held: a dead process, whatever its pid) and their lock files. Returns what was
    completed or removed (lock files not listed)."""
    done = []
    for folder in dict.fromkeys(notebook_dirs):
        if not folder.is_dir():
            continue
        for journal in sorted(folder.iterdir()):
            if _is_stale(folder, journal.name, _JOURNAL):
                with contextlib.suppress(ValueError, OSError):
                    _apply_commit(json.loads(journal.read_text()))
                journal.unlink(missing_ok=True)
                done.append(journal)
        for running in sorted(folder.iterdir()):
            if _is_stale(folder, running.name, _RUNNING):
                running.unlink(missing_ok=True)
                done.append(running)
    for parent in dict.fromkeys(staging_parents):
        if not parent.is_dir():
            continue
        for staging in sorted(parent.iterdir()):
            if staging.is_dir() and _is_stale(parent, staging.name, _STAGING):
                shutil.rmtree(staging, ignore_errors=True)
                done.append(staging)
    for folder in dict.fromkeys([*notebook_dirs, *staging_parents]):
        for lock in sorted(folder.glob(f"{RUN_LOCK_PREFIX}*{RUN_LOCK_SUFFIX}")) if folder.is_dir() else []:
            if _is_stale(folder, lock.name, _LOCK):
                lock.unlink(missing_ok=True)
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


def lab_kernelspec(kernel_name: str | None = None) -> dict:
    """The ``kernelspec`` metadata JupyterLab writes into a notebook when it starts the kernel
    (``name``, the kernelspec's ``display_name`` and ``language``): for ``kernel_name`` None,
    ipykernel's ``python3`` spec of this interpreter, the one a lab served from this
    environment starts. A notebook carrying another ``display_name`` is marked modified as soon
    as JupyterLab opens it."""
    if kernel_name is None:
        import ipykernel.kernelspec

        spec = ipykernel.kernelspec.get_kernel_dict()
        return {"display_name": spec["display_name"], "language": spec["language"], "name": "python3"}
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(kernel_name)
    return {"display_name": spec.display_name, "language": spec.language, "name": kernel_name}


def normalize_notebook(path: str | os.PathLike, kernel_name: str | None = None) -> bool:
    """Rewrite the notebook at ``path`` (atomically) as JupyterLab would save it after opening
    it: :func:`lab_kernelspec` as its kernelspec, nbformat's own serialisation (indent 1,
    sorted keys, trailing newline). Executes nothing; True when the file changed."""
    import nbformat

    path = Path(path)
    before = path.read_bytes()
    nb = nbformat.reads(before.decode(), as_version=4)
    nb.metadata["kernelspec"] = lab_kernelspec(kernel_name)
    after = nbformat.writes(nb).rstrip("\n") + "\n"
    if after.encode() == before:
        return False
    mode = stat.S_IMODE(path.stat().st_mode)
    with atomic_write(path) as fh:
        fh.write(after)
    os.chmod(path, mode)
    return True


def tidy_notebook(nb, name: str, parameters: dict, rules: Sequence[tuple[re.Pattern, str]],
                  kernelspec: dict | None = None) -> None:
    """In place: papermill's metadata without paths, paths in outputs rewritten by
    ``rules``, known stderr noise dropped, and the injected cell turned into a comment that
    records the parameters of this execution (tagged ``nbval-skip``): it assigns nothing, so a
    reader's Run All in JupyterLab takes the parameters cell (``$DANNLIB_PROFILE``, or its
    default, the profile the committed notebooks carry) and nothing overrides it.
    ``kernelspec`` (see :func:`lab_kernelspec`), when given, replaces the notebook's, so that
    JupyterLab opens the saved file unmodified."""
    if kernelspec is not None:
        nb.metadata["kernelspec"] = dict(kernelspec)
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
