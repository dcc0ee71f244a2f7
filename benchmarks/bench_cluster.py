"""Clustering: nnjax K-means and DBSCAN vs scikit-learn on the same points, one process.

* K-means, 2-D uniform points, k = 8, the same initial centroids, a fixed number of
  Lloyd iterations (nnjax ``tol=-1``; sklearn ``tol=0`` on uniform data, which does not
  converge that fast — its ``n_iter_`` is reported): time per iteration, including each
  side's final assignment pass and input handling.
* DBSCAN, 2-D blobs (``make_blobs(n, centers=5, random_state=0)``, ε = 0.3, MinPts = 10):
  time per full call; the labels are checked identical.

``ratio`` = scikit-learn time / nnjax time (above 1: nnjax faster). ``cpu`` columns are
process CPU seconds per call (all threads), steadier than wall time on a shared machine.
Run: ``.venv/bin/python -m benchmarks.bench_cluster [--quick]``.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.harness import BenchTable, bench_args, measure, pct_of_peak


def _cpu_seconds(fn, repeats: int) -> float:
    """Median process CPU seconds per call (after the calls ``measure`` already warmed up)."""
    import jax

    times = []
    for _ in range(repeats):
        start = time.process_time()
        jax.block_until_ready(fn())
        times.append(time.process_time() - start)
    return float(np.median(times))


def bench_kmeans(table: BenchTable, n: int, k: int, iters: int, repeats: int) -> None:
    import jax.numpy as jnp
    from sklearn.cluster import KMeans

    from nnjax.cluster import lloyd

    rng = np.random.default_rng(0)
    x = rng.random((n, 2), dtype=np.float32)
    init = x[rng.choice(n, k, replace=False)]
    xj, initj = jnp.asarray(x), jnp.asarray(init)

    def ours():
        return lloyd(xj, initj, max_iter=iters, tol=-1.0).inertia

    fitted = {}

    def theirs():
        fitted["model"] = KMeans(n_clusters=k, init=init, n_init=1, max_iter=iters, tol=0.0,
                                 algorithm="lloyd").fit(x)
        return fitted["model"].inertia_

    m_ours = measure(ours, warmup=1, repeats=repeats)
    m_theirs = measure(theirs, warmup=1, repeats=repeats)
    sk_iters = fitted["model"].n_iter_
    ours_it = m_ours["median_s"] / iters
    theirs_it = m_theirs["median_s"] / sk_iters
    table.add(
        work=f"K-means {n:,}x2, k={k}", iterations=f"{iters} / sklearn {sk_iters}",
        nnjax_ms=ours_it * 1e3, sklearn_ms=theirs_it * 1e3, ratio=theirs_it / ours_it,
        nnjax_cpu_ms=_cpu_seconds(ours, repeats) / iters * 1e3,
        sklearn_cpu_ms=_cpu_seconds(theirs, repeats) / sk_iters * 1e3,
        nnjax_compile_s=m_ours["compile_s"], unit="per iteration",
        # memory-bound: an iteration must read every point once (n x 2 float32)
        pct_of_peak=pct_of_peak({"bytes": 4.0 * n * 2}, ours_it, bound="memory"),
        inertia_rel_diff=abs(float(ours()) - fitted["model"].inertia_) / fitted["model"].inertia_,
    )


def bench_dbscan(table: BenchTable, n: int, eps: float, min_pts: int, repeats: int) -> None:
    from sklearn.cluster import DBSCAN
    from sklearn.datasets import make_blobs

    from nnjax.cluster import dbscan

    x, _ = make_blobs(n, centers=5, random_state=0)
    x = x.astype(np.float32)

    def ours():
        return dbscan(x, eps, min_pts).labels

    def theirs():
        return DBSCAN(eps=eps, min_samples=min_pts).fit(x).labels_

    m_ours = measure(ours, warmup=1, repeats=repeats)
    m_theirs = measure(theirs, warmup=1, repeats=repeats)
    result = dbscan(x, eps, min_pts)
    table.add(
        work=f"DBSCAN {n:,} blob points, eps={eps}, MinPts={min_pts}", iterations=f"{result.n_iter} rounds",
        nnjax_ms=m_ours["median_s"] * 1e3, sklearn_ms=m_theirs["median_s"] * 1e3,
        ratio=m_theirs["median_s"] / m_ours["median_s"],
        nnjax_cpu_ms=_cpu_seconds(ours, repeats) * 1e3, sklearn_cpu_ms=_cpu_seconds(theirs, repeats) * 1e3,
        nnjax_compile_s=m_ours["compile_s"], unit="per call",
        # the neighbour counts: every pair's squared distance, 3 FLOPs per coordinate
        pct_of_peak=pct_of_peak({"flops": 3.0 * 2 * n * n}, m_ours["median_s"]),
        same_labels=bool(np.array_equal(np.asarray(result.labels), theirs())),
    )


def main(argv: list[str] | None = None) -> None:
    args = bench_args(argv, __doc__)
    repeats = 3 if args.quick else 5
    table = BenchTable(
        "Clustering vs scikit-learn",
        "python -m benchmarks.bench_cluster" + (" --quick" if args.quick else ""),
        notes="ratio = scikit-learn time / nnjax time (above 1: nnjax faster); *_cpu_ms = process CPU "
              "time (all threads) per unit. K-means: uniform 2-D points, same initial centroids, fixed "
              "iterations. DBSCAN: make_blobs(n, centers=5, random_state=0); same_labels = identical labels. "
              "pct_of_peak (nnjax): K-means against the copy bandwidth, counting the n x 2 float32 points "
              "read once per iteration; DBSCAN against the matmul peak, counting 6 FLOPs per pair of points "
              "(the squared distances of the neighbour search).",
    )
    for n in (100_000,) if args.quick else (100_000, 1_000_000):
        bench_kmeans(table, n, k=8, iters=20, repeats=repeats)
    for n in (5_000,) if args.quick else (5_000, 20_000):
        bench_dbscan(table, n, eps=0.3, min_pts=10, repeats=repeats)
    md, _ = table.write(args.out, name="cluster")
    print(md.read_text())


if __name__ == "__main__":
    main()
