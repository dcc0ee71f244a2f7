"""The headline rows of each benchmark table: one line per piece of work, nnjax against its peer.

``nnjax bench`` calls :func:`headlines` on every table it merges (this machine's, or a GPU
machine's copied back) and writes the result at the top of ``benchmarks/results/README.md``
and into the repository README, between the ``bench-headlines`` markers. Nothing here
measures: each function only picks rows of a table that a benchmark wrote. A table whose
rows are missing (``--quick`` runs, older tables) gives fewer headlines, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = dict[str, Any]


def _ms(value: float) -> str:
    """Milliseconds with three significant digits (``0.716 ms``, ``97.3 ms``, ``1,210 ms``)."""
    if value >= 1000:
        return f"{value:,.0f} ms"
    return f"{value:.3g} ms"


def _ratio(peer: float, ours: float) -> str:
    return f"{peer / ours:.2f}"


def _matches(value: Any, wanted: Any) -> bool:
    """A string field matches by prefix, any other field by equality."""
    return str(value).startswith(wanted) if isinstance(wanted, str) else value == wanted


def _find(rows: list[Row], **match: Any) -> Row | None:
    """The first row whose fields match the given values (see :func:`_matches`)."""
    return next((row for row in rows if all(_matches(row.get(k, ""), v) for k, v in match.items())), None)


def _line(work: str, ours: str, peer: str, ratio: str, pct: float | None = None) -> Row:
    """One headline; ``pct``: the nnjax row's ``pct_of_peak`` (None for tables written before that column)."""
    return {"work": work, "nnjax": ours, "peer": peer, "ratio": ratio, "pct_of_peak": pct}


def _pct(row: Row | None) -> float | None:
    value = (row or {}).get("pct_of_peak")
    return None if value in (None, "") else float(value)


def mlp(rows: list[Row]) -> list[Row]:
    ours = _find(rows, batch=128, implementation="nnjax (nnjax.nn.optim.adam)")
    torch = _find(rows, batch=128, implementation="PyTorch eager")
    if not (ours and torch):
        return []
    return [_line("MLP 784-256-256-10 train step, Adam, batch 128", _ms(ours["median_ms"]),
                  f"PyTorch eager {_ms(torch['median_ms'])}", _ratio(torch["median_ms"], ours["median_ms"]),
                  _pct(ours))]


def lstm(rows: list[Row]) -> list[Row]:
    out = []
    for length in sorted({r["seq_len"] for r in rows}):
        ours, torch, keras = (_find(rows, seq_len=length, impl=name) for name in ("nnjax", "pytorch", "keras fit"))
        if not (ours and torch):
            continue
        peer = f"PyTorch {_ms(torch['ms_per_step'])}" + (f", Keras 3 fit {_ms(keras['ms_per_step'])}" if keras else "")
        ratio = _ratio(torch["ms_per_step"], ours["ms_per_step"])
        if keras:
            ratio += f", {_ratio(keras['ms_per_step'], ours['ms_per_step'])}"
        out.append(_line(f"LSTM(50) train step, batch 32 x {length} steps", _ms(ours["ms_per_step"]), peer, ratio,
                         _pct(ours)))
    return out


def cluster(rows: list[Row]) -> list[Row]:
    return [_line(f"{row['work']} ({row['unit']})", _ms(row["nnjax_ms"]), f"scikit-learn {_ms(row['sklearn_ms'])}",
                  _ratio(row["sklearn_ms"], row["nnjax_ms"]), _pct(row))
            for row in rows if row["work"].startswith(("K-means 1,000,000", "DBSCAN 20,000"))]


def mnist(rows: list[Row]) -> list[Row]:
    out = []
    for threads in sorted({r["threads"] for r in rows}, reverse=True):
        step = {"what": "train step", "threads": threads}
        ours = _find(rows, implementation="nnjax ThesisCNN conv_impl=fast", xla_flags="ynn conv off", **step)
        cpu = ours is not None  # the CPU flag is only set on CPU runs
        ours = ours or _find(rows, implementation="nnjax ThesisCNN conv_impl=fast", **step)
        torch = _find(rows, implementation="PyTorch eager", **step)
        compiled = _find(rows, implementation="PyTorch torch.compile", **step)
        if not (ours and torch):
            continue
        peer = f"PyTorch eager {_ms(torch['median_ms'])}"
        ratio = _ratio(torch["median_ms"], ours["median_ms"])
        if compiled:
            peer += f", torch.compile {_ms(compiled['median_ms'])}"
            ratio += f", {_ratio(compiled['median_ms'], ours['median_ms'])}"
        where = ("" if not cpu else ", one pinned core" if threads == 1 else f", {threads} threads")
        out.append(_line(f"thesis CNN train step, batch 128{where}", _ms(ours["median_ms"]), peer, ratio, _pct(ours)))
    return out


def mobilenet_forward(rows: list[Row]) -> list[Row]:
    ours = _find(rows, implementation="nnjax (depthwise: nine")
    peers = [(name, _find(rows, implementation=prefix)) for name, prefix in
             (("PyTorch eager", "PyTorch eager (NCHW)"), ("channels_last", "PyTorch eager (channels_last)"),
              ("Keras 3", "Keras 3"))]
    peers = [(name, row) for name, row in peers if row]
    if not ours or not peers:
        return []
    return [_line("MobileNetV2 forward, batch 32 x 224 px", f"{ours['images_per_s']:.1f} img/s",
                  ", ".join(f"{name} {row['images_per_s']:.1f}" for name, row in peers),
                  ", ".join(_ratio(ours["images_per_s"], row["images_per_s"]) for _, row in peers), _pct(ours))]


def mobilenet_train_step(rows: list[Row]) -> list[Row]:
    ours, naive = _find(rows, implementation="partitioned"), _find(rows, implementation="naive")
    keras = _find(rows, implementation="Keras 3 fit")
    if not (ours and naive):
        return []
    peer = f"naive masked backward {_ms(naive['median_ms'])}" + (f", Keras 3 fit {_ms(keras['median_ms'])}"
                                                                 if keras else "")
    ratio = _ratio(naive["median_ms"], ours["median_ms"]) + (f", {_ratio(keras['median_ms'], ours['median_ms'])}"
                                                             if keras else "")
    return [_line("frozen MobileNetV2 + head train step, batch 32", _ms(ours["median_ms"]), peer, ratio, _pct(ours))]


def bert_train_step(rows: list[Row]) -> list[Row]:
    ours = _find(rows, implementation="nnjax partitioned")
    torch = _find(rows, implementation="PyTorch requires_grad=False, encoder eval mode")
    if not (ours and torch):
        return []
    return [_line("frozen MiniLM + head train step, 64 x 64 tokens", _ms(ours["median_ms"]),
                  f"PyTorch, frozen encoder in eval mode {_ms(torch['median_ms'])}",
                  _ratio(torch["median_ms"], ours["median_ms"]), _pct(ours))]


def bert_encoding(rows: list[Row]) -> list[Row]:
    ours, torch = _find(rows, workload="nnjax jit"), _find(rows, workload="PyTorch no_grad")
    if not (ours and torch):
        return []
    return [_line("MiniLM encoding, 64 x 64 tokens", f"{ours['tokens_per_s']:,.0f} tokens/s",
                  f"PyTorch {torch['tokens_per_s']:,.0f}", _ratio(ours["tokens_per_s"], torch["tokens_per_s"]),
                  _pct(ours))]


def finetune(rows: list[Row]) -> list[Row]:
    out = []
    for work in dict.fromkeys(r["work"] for r in rows):
        ours = _find(rows, work=work, implementation="nnjax")
        peers = [(name, _find(rows, work=work, implementation=prefix)) for name, prefix in
                 (("PyTorch eager", "PyTorch eager"), ("channels_last", "PyTorch eager (channels_last)"),
                  ("torch.compile", "torch.compile"))]
        peers = [(name, row) for name, row in peers if row]
        if not ours or not peers:
            continue
        out.append(_line(f"{work} train step", _ms(ours["median_ms"]),
                         ", ".join(f"{name} {_ms(row['median_ms'])}" for name, row in peers),
                         ", ".join(_ratio(row["median_ms"], ours["median_ms"]) for _, row in peers), _pct(ours)))
    return out


#: table title -> its headline function
BY_TITLE: dict[str, Callable[[list[Row]], list[Row]]] = {
    "MLP train step": mlp,
    "LSTM train step": lstm,
    "Clustering vs scikit-learn": cluster,
    "MNIST CNN train step": mnist,
    "MobileNetV2 backbone forward": mobilenet_forward,
    "MobileNetV2 transfer train step": mobilenet_train_step,
    "BERT frozen-encoder train step": bert_train_step,
    "BERT encoding throughput": bert_encoding,
    "Fine-tuning train steps": finetune,
}


def machine(env: dict[str, Any]) -> str:
    """``"NVIDIA H100 80GB HBM3"`` for a GPU table, ``"CPU, 2 cores (AMD EPYC)"`` for a CPU one."""
    kind, _, name = str(env.get("device", "")).partition(":")
    if kind != "cpu":
        return name or kind
    extensions = env.get("vector_extensions") or []
    isa = ("AVX-512" + (", AMX" if "amx_tile" in extensions else "") if "avx512f" in extensions
           else "AVX2" if "avx2" in extensions else "")
    return f"CPU, {env.get('cores', '?')} cores ({env.get('cpu', '?')}{', ' + isa if isa else ''})"


def headlines(table: dict[str, Any], source: str) -> list[Row]:
    """Headline rows of one merged table (its JSON payload), each with its machine, date and file name."""
    pick = BY_TITLE.get(table.get("title", ""))
    if pick is None:
        return []
    env = table.get("env", {})
    return [{**row, "machine": machine(env), "date": str(env.get("date", ""))[:10], "table": source}
            for row in pick(table.get("rows", []))]


def markdown(rows: list[Row]) -> str:
    """The headline table in Markdown (ratio: peer time / nnjax time, above 1 means nnjax is faster)."""
    lines = ["| work | machine | nnjax | peer | ratio (peer / nnjax) | nnjax % of peak | table |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['work']} | {r['machine']}, {r['date']} | {r['nnjax']} | {r['peer']} | {r['ratio']} | "
              f"{'' if r.get('pct_of_peak') is None else format(r['pct_of_peak'], '.3g')} | `{r['table']}` |"
              for r in rows]
    return "\n".join(lines) + "\n"
