"""Figures of an embedder's evaluation (MLflow artifacts): ROC and DET curves, the genuine vs
impostor distance histograms with γ, and a 2-D projection of the embeddings."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure  # Figure objects, not pyplot: no global state, no GUI

MAX_CURVE_POINTS = 2000
MIN_RATE = 1e-4  # log axes start here (a rate of 0 has no logarithm)


def error_rates(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAR and TAR when accepting distances below each observed distance (ascending FAR)."""
    genuine, impostor = np.sort(genuine), np.sort(impostor)
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    if thresholds.size > MAX_CURVE_POINTS:
        thresholds = np.quantile(thresholds, np.linspace(0.0, 1.0, MAX_CURVE_POINTS))
    far = np.searchsorted(impostor, thresholds, "left") / impostor.size
    tar = np.searchsorted(genuine, thresholds, "left") / genuine.size
    return np.append(far, 1.0), np.append(tar, 1.0)


def roc_figure(genuine: np.ndarray, impostor: np.ndarray, gamma: float | None) -> Figure:
    far, tar = error_rates(genuine, impostor)
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot(np.maximum(far, MIN_RATE), tar, label="embedder")
    ax.plot([MIN_RATE, 1.0], [MIN_RATE, 1.0], ls=":", c="grey", label="chance")
    if gamma is not None:
        point = (max(np.mean(impostor < gamma), MIN_RATE), np.mean(genuine < gamma))
        ax.scatter(*point, c="red", zorder=3, label=f"γ = {gamma:.3f}")
    ax.set(xscale="log", xlim=(MIN_RATE, 1), ylim=(0, 1.02))
    ax.set(xlabel="false accept rate (FAR)", ylabel="true accept rate (TAR)", title="ROC")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def det_figure(genuine: np.ndarray, impostor: np.ndarray) -> Figure:
    """Detection error trade-off: false rejects against false accepts, both on log axes."""
    far, tar = error_rates(genuine, impostor)
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    ax.plot(np.maximum(far, MIN_RATE), np.maximum(1.0 - tar, MIN_RATE))
    ax.set(xscale="log", yscale="log", xlim=(MIN_RATE, 1), ylim=(MIN_RATE, 1))
    ax.set(xlabel="false accept rate (FAR)", ylabel="false reject rate (FRR)", title="DET")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def distance_histogram_figure(
    genuine: np.ndarray, impostor: np.ndarray, gamma: float | None
) -> Figure:
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    bins = np.linspace(0.0, max(float(genuine.max()), float(impostor.max())) * 1.02, 60)
    ax.hist(impostor, bins=bins, density=True, alpha=0.55, label="different people")
    ax.hist(genuine, bins=bins, density=True, alpha=0.55, label="same person")
    if gamma is not None:
        ax.axvline(gamma, c="red", ls="--", label=f"γ = {gamma:.3f}")
    ax.set(xlabel="L2 distance between embeddings", ylabel="density")
    ax.set_title("Same vs different: distance distributions")
    ax.legend()
    fig.tight_layout()
    return fig


def projection_figure(embeddings: np.ndarray, labels: np.ndarray, max_identities: int) -> Figure:
    """The first two principal components of the embeddings of up to `max_identities` people
    (linear, so distances between the clusters are not distorted the way t-SNE distorts them)."""
    labels = np.asarray(labels)
    shown = np.unique(labels)[:max_identities]
    keep = np.isin(labels, shown)
    points = embeddings[keep] - embeddings[keep].mean(axis=0)
    _, _, axes = np.linalg.svd(points, full_matrices=False)
    xy = points @ axes[:2].T
    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(shown))]
    markers = "os^Dv"
    for i, identity in enumerate(shown):
        mine = labels[keep] == identity
        ax.scatter(*xy[mine].T, s=18, c=colours[i], marker=markers[i // 10 % len(markers)])
    ax.set(xlabel="principal component 1", ylabel="principal component 2")
    ax.set_title(f"Embeddings of {len(shown)} unseen people (PCA)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
