"""Label-free model selection (notebook 07): :data:`RULES` score a trained network without a target label (higher is
better in :func:`label_free_scores`), judged against :func:`oracle_target_accuracy`, which **reads target labels**."""
from __future__ import annotations

import math
from typing import Hashable, Mapping

import numpy as np
import torch

#: rule name -> (higher_is_better of the rule's natural quantity, what it is)
RULES: dict[str, tuple[bool, str]] = {
    "source_accuracy": (True, "accuracy on the held-out source split"),
    "dev": (False, "DEV risk (You et al. 2019): importance-weighted source loss with a control variate"),
    "entropy": (False, "mean entropy of the target predictions (nats)"),
    "info_max": (True, "entropy of the mean target prediction minus the mean entropy (nats)"),
    "reverse_validation": (True, "reverse classifier (target pseudo-labels -> source) accuracy on the source"),
}
#: the oracle's name in every table: target test accuracy, read from target labels
ORACLE = "oracle_target_accuracy"
#: where :func:`dannlib.sweep.compute` keeps :func:`score_trained`'s scores in a run's ``final``
SELECTION_FIELD = "selection"


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _array(name: str, a, ndim: int) -> np.ndarray:
    if (a := _numpy(a)).ndim != ndim or len(a) == 0:
        raise ValueError(f"{name} must be a non-empty array of {ndim} dimension(s), got shape {a.shape}")
    return a.astype(np.float64)


def _labels(name: str, a, n: int) -> np.ndarray:
    if not np.all((a := _array(name, a, 1)) == np.round(a)) or len(a) != n:
        raise ValueError(f"{name} must hold {n} integer class indices, got {len(a)} values")
    return a.astype(np.int64)


def _log_probs(name: str, logits) -> torch.Tensor:
    return torch.log_softmax(torch.as_tensor(_array(name, logits, 2)), dim=-1)


def _entropy(log_p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of ``log_p (N, n)``; ``0 log 0 = 0``."""
    return -torch.special.xlogy(log_p.exp(), log_p.exp()).sum(-1)


def _features(a, b, names) -> tuple[np.ndarray, np.ndarray]:
    """Two feature samples as float64 ``(N, D)`` (``(N, ...)`` flattened) of one width."""
    a, b = (_array(n, x.reshape(len(x), -1) if x.ndim > 2 else x, 2) for n, x in zip(names, (_numpy(a), _numpy(b))))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names[0]} and {names[1]} must have the same feature size, got {a.shape[1]}, {b.shape[1]}")
    return a, b


def _logistic(C: float, x, y, method: str, x_out):
    """``method`` on ``x_out`` of an L2 (``C``) logistic regression fitted on ``(x, y)``, both scaled as ``x``."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits
    if not (isinstance(C, (int, float)) and C > 0):
        raise ValueError(f"C must be a number > 0, got {C!r}")
    mean, std = x.mean(0), x.std(0) + 1e-8
    with threadpool_limits(limits=1):
        return getattr(LogisticRegression(C=C, max_iter=2000).fit((x - mean) / std, y), method)((x_out - mean) / std)


def source_accuracy(source_logits, source_labels) -> float:
    """Arg-max accuracy on a held-out source split (DomainBed, Gulrajani & Lopez-Paz 2021). Higher is better."""
    logits = _array("source_logits", source_logits, 2)
    return float(np.mean(logits.argmax(1) == _labels("source_labels", source_labels, len(logits))))


def oracle_target_accuracy(target_logits, target_labels) -> float:
    """**Oracle, not a selection rule: it reads the target test labels.** Arg-max accuracy of
    ``target_logits (N, n_classes)`` against ``target_labels (N,)``."""
    logits = _array("target_logits", target_logits, 2)
    return float(np.mean(logits.argmax(1) == _labels("target_labels", target_labels, len(logits))))


def per_sample_cross_entropy(logits, labels) -> np.ndarray:
    """``-log softmax(logits)[label]``: ``(N, n_classes)``, ``(N,)`` -> ``(N,)``."""
    y = _labels("labels", labels, (log_p := _log_probs("logits", logits)).shape[0])
    return (-log_p[torch.arange(len(y)), torch.as_tensor(y)]).numpy()


def importance_weights(source_features, target_features, *, C: float = 1.0) -> np.ndarray:
    """``w(x) = p_t(x) / p_s(x) = exp(logit) * N_s / N_t`` (You et al. 2019, sec. 4.2) of a source-vs-target
    logistic regression (logit clipped at +-50), fitted on the weighed samples: (N_s, D), (N_t, D) -> (N_s,)."""
    fs, ft = _features(source_features, target_features, ("source_features", "target_features"))
    logit = _logistic(C, np.concatenate([fs, ft]), np.r_[np.zeros(len(fs)), np.ones(len(ft))], "decision_function", fs)
    return np.exp(np.clip(logit, -50.0, 50.0)) * len(fs) / len(ft)


def dev_risk(losses, weights) -> float:
    """DEV's risk (You et al. 2019, Algorithm 1): ``L = w l``, ``eta = -Cov(L, W) / Var(W)`` (0 for equal weights),
    ``mean(L) + eta mean(W) - eta``. Lower is better."""
    l, w = _array("losses", losses, 1), _array("weights", weights, 1)
    if len(l) != len(w):
        raise ValueError(f"losses and weights must have the same length, got {len(l)} and {len(w)}")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError("weights must be finite and >= 0")
    if len(w) < 2 or np.var(w) == 0:
        return float((w * l).mean())
    eta = -np.cov(w * l, w)[0, 1] / np.var(w, ddof=1)
    return float((w * l).mean() + eta * w.mean() - eta)


def dev(source_logits, source_labels, source_features, target_features, *, C: float = 1.0) -> float:
    """DEV (You et al., ICML 2019): :func:`dev_risk` of source losses, :func:`importance_weights`. Lower is better."""
    losses = per_sample_cross_entropy(source_logits, source_labels)
    return dev_risk(losses, importance_weights(source_features, target_features, C=C))


def prediction_entropy(target_logits) -> float:
    """Mean entropy (nats) of ``softmax(target_logits (N, n_classes))``. **Lower is better.**"""
    return float(_entropy(_log_probs("target_logits", target_logits)).mean())


def information_maximisation(target_logits) -> float:
    """``H(mean_i p_i) - mean_i H(p_i)`` (nats; Shi & Sha 2012, Hu et al. 2017); a collapse: 0. Higher is better."""
    log_p = _log_probs("target_logits", target_logits)
    return float(_entropy(torch.log(log_p.exp().mean(0, keepdim=True)))[0] - _entropy(log_p).mean())


def reverse_validation(target_features, target_pseudo_labels, source_features, source_labels) -> float:
    """Reverse validation (Ganin et al. 2016, sec. 5.1.2) with a logistic regression for the reverse DANN:
    trained on target features and pseudo-labels, its accuracy on the held-out source. Higher is better."""
    ft, fs = _features(target_features, source_features, ("target_features", "source_features"))
    pseudo = _labels("target_pseudo_labels", target_pseudo_labels, len(ft))
    ys = _labels("source_labels", source_labels, len(fs))
    if len(classes := np.unique(pseudo)) == 1:
        return float(np.mean(ys == classes[0]))
    return float(np.mean(_logistic(1.0, ft, pseudo, "predict", fs) == ys))


def _finite(scores: Mapping[Hashable, float], name: str) -> dict:
    if not (out := {k: float(v) for k, v in scores.items() if v is not None and math.isfinite(float(v))}):
        raise ValueError(f"{name} holds no finite score")
    return out


def pick(scores_by_setting: Mapping[Hashable, float]) -> Hashable:
    """The setting with the highest finite score (ties: the first in the mapping's order)."""
    return max(s := _finite(scores_by_setting, "scores_by_setting"), key=s.get)


def regret(scores_by_setting: Mapping[Hashable, float], oracle_by_setting: Mapping[Hashable, float]) -> float:
    """The oracle's best target accuracy minus that of the rule's :func:`pick`, over the settings both score."""
    oracle = _finite(oracle_by_setting, "oracle_by_setting")
    return float(max(oracle.values()) - oracle[pick({k: v for k, v in scores_by_setting.items() if k in oracle})])


def rank_correlation(scores_by_setting: Mapping[Hashable, float], oracle_by_setting: Mapping[Hashable, float]) -> float:
    """Spearman's correlation with the oracle over the settings both hold finite (nan below 3 or if constant)."""
    from scipy.stats import spearmanr
    pairs = [(float(v), float(oracle_by_setting[k])) for k, v in scores_by_setting.items() if k in oracle_by_setting]
    if len(pairs := [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]) < 3:
        return float("nan")
    a, b = np.array(pairs).T
    return float("nan") if np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b).statistic)


def label_free_scores(source_logits, source_labels, source_features, target_logits, target_features) -> dict:
    """Every rule's score, **higher is better**, from outputs on the held-out source and the unlabelled target
    (logits ``(N, n)``, features ``(N, D)``); nan under every rule for non-finite outputs (a diverged run)."""
    if not all(np.isfinite(_numpy(a)).all() for a in (source_logits, source_features, target_logits, target_features)):
        return {rule: float("nan") for rule in RULES}
    pseudo = _array("target_logits", target_logits, 2).argmax(1)
    return {"source_accuracy": source_accuracy(source_logits, source_labels),
            "dev": -dev(source_logits, source_labels, source_features, target_features),
            "entropy": -prediction_entropy(target_logits), "info_max": information_maximisation(target_logits),
            "reverse_validation": reverse_validation(target_features, pseudo, source_features, source_labels)}


def scoreable(modules: Mapping[str, torch.nn.Module]) -> bool:
    """Whether ``modules`` hold a DANN-family ``net`` or an ADDA-family ``encoder`` and ``classifier``."""
    return "net" in modules or {"encoder", "classifier"} <= set(modules)


@torch.no_grad()
def network_outputs(modules: Mapping[str, torch.nn.Module], x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(logits (N, n_classes), features (N, D))`` of a ``net`` or an ``encoder`` and ``classifier``, in eval mode."""
    if not scoreable(modules):
        raise ValueError(f"modules must hold 'net' (DANN family) or 'encoder' and 'classifier' (ADDA family), "
                         f"got {sorted(modules)}")
    parts = [net] if (net := modules.get("net")) is not None else [modules["encoder"], modules["classifier"]]
    feat, head = (net.features, net.label_predictor) if net is not None else parts
    for m in parts:
        m.eval()
    device, logits, features = next(parts[0].parameters()).device, [], []
    for i in range(0, len(x), 256):
        logits.append(head(f := feat(x[i:i + 256].to(device))).float().cpu())
        features.append(f.float().flatten(1).cpu())
    return torch.cat(logits).numpy(), torch.cat(features).numpy()


def score_modules(modules, source_val_x, source_val_y, target_x, *, n: int | None = 2000) -> dict[str, float]:
    """:func:`label_free_scores` on at most ``n`` source and ``n`` target images (drawn under seed 0; None: all)."""
    rng = np.random.default_rng(0)
    i_s, i_t = (np.arange(len(x)) if n is None or n >= len(x) else np.sort(rng.choice(len(x), size=n, replace=False))
                for x in (source_val_x, target_x))
    s_logits, s_feats = network_outputs(modules, source_val_x[i_s])
    t_logits, t_feats = network_outputs(modules, target_x[i_t])
    return label_free_scores(s_logits, _numpy(source_val_y)[i_s], s_feats, t_logits, t_feats)


def score_trained(modules, eval_sets, target_x, *, n: int | None = 2000) -> dict[str, float]:
    """:func:`score_modules` on the source test split and ``target_x``, and :data:`ORACLE` on the target test split."""
    source_val, target_test = eval_sets["source_test"], eval_sets["target_test"]
    scores = score_modules(modules, source_val.x, source_val.y, target_x, n=n)
    return {**scores, ORACLE: oracle_target_accuracy(network_outputs(modules, target_test.x)[0], target_test.y)}


def score_run(stored, *, n: int | None = 2000, data_root=None) -> dict[str, float]:
    """:func:`score_trained` of a stored digits run (:class:`dannlib.store.StoredRun`) from its saved weights."""
    from .store import load_data
    if stored.spec.data.get("kind") != "digits":
        raise ValueError(f"score_run needs a digits run (its data spec holds a source test split); "
                         f"{stored.spec.label} has data kind {stored.spec.data.get('kind')!r}")
    _, target, eval_sets = load_data(stored.spec.data, data_root)
    return score_trained(stored.load_modules(), eval_sets, target.unlabelled().x, n=n)


def scored_records(runs, *, data_root=None) -> list[dict]:
    """Per ``(tags, StoredRun)``: its record, scores and :data:`ORACLE`, and ``scores_from``: ``"record"`` (kept
    at training), ``"weights"`` (:func:`score_run`) or ``"missing"``."""
    out = []
    for tags, run in runs:
        scores, source = {}, "missing"
        if (kept := run.final.get(SELECTION_FIELD)) is not None:
            scores, source = {k: float(v) for k, v in kept.items()}, "record"
        elif run.weights_path.is_file():
            scores, source = score_run(run, data_root=data_root), "weights"
        rec = {k: v for k, v in run.record(**tags).items() if k != SELECTION_FIELD}
        out.append({**rec, **scores, "scores_from": source})
    return out


def judge_rules(records, setting, *, by=("method", "pair"), rules=tuple(RULES)) -> list[dict]:
    """One row per group ``by``, seed and rule over the grid of cells ``setting`` (tag names) of the runs that finished
    ok: ``pick`` (a dict), ``regret``, ``spearman`` and ``n_settings`` (the cells with a finite oracle)."""
    setting, grids, rows = tuple(setting), {}, []
    for r in (r for r in records if r.get("status", "ok") == "ok"):  # as the tables: runs that finished ok
        cell, group = tuple(r.get(k) for k in setting), tuple(r.get(k) for k in by)
        if cell in (grid := grids.setdefault((group, r.get("seed")), {})):
            raise ValueError(f"two records of one grid cell {dict(zip(setting, cell))} for {dict(zip(by, group))}, "
                             f"seed {r.get('seed')}: add the tag that tells them apart to setting")
        grid[cell] = r
    for (group, seed), grid in grids.items():
        truth = {cell: r.get(ORACLE, float("nan")) for cell, r in grid.items()}
        for rule in rules:
            scores = {cell: r.get(rule, float("nan")) for cell, r in grid.items()}
            try:
                chosen = dict(zip(setting, pick({c: v for c, v in scores.items() if c in _finite(truth, "oracle")})))
                loss = regret(scores, truth)
            except ValueError:  # no finite score in this grid
                chosen, loss = None, float("nan")
            rows.append({**dict(zip(by, group)), "seed": seed, "rule": rule, "pick": chosen, "regret": loss,
                         "spearman": rank_correlation(scores, truth),
                         "n_settings": sum(math.isfinite(float(v)) for v in truth.values())})
    return rows
