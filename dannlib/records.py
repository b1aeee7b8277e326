"""Results as records (JSON lines) and the tables built from them.

One record per evaluation: a flat dict with at least ``notebook``, ``profile``, ``method``,
``seed``, ``source``, ``target`` and the metrics (e.g. ``target_acc``), plus ``machine``
(see :func:`dannlib.utils.machine_info`). Every table in a notebook or the README is built
from these records by :func:`summary_table`, never typed in.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from .utils import atomic_write

REQUIRED_KEYS = ("notebook", "profile", "method", "seed")


def records_path(results_dir, notebook: str, profile: str) -> Path:
    return Path(results_dir) / profile / f"{notebook}.jsonl"


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN/inf: keep them visible as strings
    if hasattr(value, "item") and callable(value.item):
        try:
            return _clean(value.item())
        except (ValueError, RuntimeError):
            pass
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_records(results_dir, notebook: str, profile: str, records: Iterable[dict]) -> Path:
    """Write ``records`` as ``results_dir/profile/notebook.jsonl``, atomically (the previous
    file survives a failure). Each record must carry the keys in ``REQUIRED_KEYS``."""
    records = [dict(r) for r in records]
    for i, r in enumerate(records):
        missing = [k for k in REQUIRED_KEYS if k not in r]
        if missing:
            raise ValueError(f"record {i} lacks {missing}; every record needs {list(REQUIRED_KEYS)}")
    path = records_path(results_dir, notebook, profile)
    with atomic_write(path) as fh:
        for r in records:
            fh.write(json.dumps(_clean(r), sort_keys=True) + "\n")
    return path


def read_records(path_or_dir, notebook: str | None = None, profile: str | None = None) -> list[dict]:
    """Read records from one ``.jsonl`` file, or ``dir/profile/notebook.jsonl``."""
    path = Path(path_or_dir)
    if notebook is not None:
        path = records_path(path, notebook, profile)
    if not path.exists():
        raise FileNotFoundError(f"no records at {path}; run the notebook (python -m dannlib regenerate) first")
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def summary_table(records: list[dict], metric: str, by=("method",), columns: str | None = None,
                  digits: int = 4, include_failed: bool = False):
    """Mean, std and n of ``metric`` over seeds, grouped by ``by`` (and pivoted on
    ``columns`` if given), as a pandas DataFrame of strings "mean ± std (n)".

    Records whose ``status`` is not "ok" (diverged or collapsed runs) are left out of the
    mean and counted in a separate ``failed`` column, never averaged in silently."""
    import pandas as pd

    df = pd.DataFrame(records)
    if "status" not in df:
        df["status"] = "ok"
    df["status"] = df["status"].fillna("ok")
    keys = list(by) + ([columns] if columns else [])
    ok = df if include_failed else df[df["status"] == "ok"]
    ok = ok.assign(**{metric: pd.to_numeric(ok[metric], errors="coerce")})
    g = ok.groupby(keys, sort=False)[metric]
    stats = g.agg(["mean", "std", "count"]).reset_index()
    stats["cell"] = [
        f"{m:.{digits}f} ± {0.0 if (isinstance(s, float) and math.isnan(s)) else s:.{digits}f} ({int(n)})"
        for m, s, n in zip(stats["mean"], stats["std"], stats["count"])
    ]
    if columns:
        table = stats.pivot(index=list(by), columns=columns, values="cell")
    else:
        table = stats.set_index(list(by))[["cell"]].rename(columns={"cell": metric})
    failed = df[df["status"] != "ok"]
    if len(failed) and not include_failed:
        counts = failed.groupby(list(by)).size().rename("failed")
        table = table.join(counts, how="left").fillna({"failed": 0})
    return table


def mean_std(records: list[dict], metric: str, **match) -> tuple[float, float, int]:
    """Mean, sample std and count of ``metric`` over the ok records matching ``match``."""
    vals = [float(r[metric]) for r in records
            if r.get("status", "ok") == "ok" and all(r.get(k) == v for k, v in match.items())]
    if not vals:
        return float("nan"), float("nan"), 0
    m = sum(vals) / len(vals)
    s = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return m, s, len(vals)


# -- trained networks, saved by one notebook for another (e.g. 03 -> 04) -----------------

def model_path(results_dir, profile: str, tag: str, method: str, seed: int) -> Path:
    """``results_dir/profile/models/{tag}_{method}_s{seed}.pt``."""
    return Path(results_dir) / profile / "models" / f"{tag}_{method}_s{int(seed)}.pt"


def save_models(results_dir, profile: str, tag: str, method: str, nets: dict, meta: dict | None = None) -> list[Path]:
    """Save each seed's network (``nets``: seed -> ``nn.Module``) as its ``state_dict`` with
    ``meta`` (e.g. the network builder's arguments and the config) to :func:`model_path`,
    each file written atomically (``torch.save`` to a temporary name, then renamed)."""
    import torch

    from .utils import atomic_path

    out = []
    for seed, net in nets.items():
        path = model_path(results_dir, profile, tag, method, seed)
        state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save({"state_dict": state, "meta": dict(meta or {}), "method": method, "seed": int(seed)}, tmp)
        out.append(path)
    return out


def load_models(results_dir, profile: str, tag: str, method: str, seeds, build, device=None) -> dict:
    """The networks saved by :func:`save_models` for ``seeds``: seed -> module built by
    ``build(meta)`` (a callable returning an untrained module of the same architecture) with
    the saved weights loaded, in eval mode. Raises FileNotFoundError naming the first
    missing file."""
    import torch

    nets = {}
    for seed in seeds:
        path = model_path(results_dir, profile, tag, method, seed)
        if not path.is_file():
            raise FileNotFoundError(f"no saved network at {path}; run the notebook that trains {method!r} "
                                    f"(profile {profile!r}) first")
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net = build(blob["meta"])
        net.load_state_dict(blob["state_dict"])
        nets[int(seed)] = net.to(device if device is not None else "cpu").eval()
    return nets
