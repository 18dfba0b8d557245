"""``python -m benchmark.perf optim``: the table's rows, ratios and target verdicts.

Timings are never asserted (the machine decides them); what is checked is that the
harness times every row, that the ratios are the ratios of its own timings, and that each
target cell's verdict agrees with its ratio and the stated limit.
"""

from __future__ import annotations

import argparse
import re

from benchmark.perf import optim as perf_optim


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    perf_optim.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cpu_table_rows_ratios_and_targets(capsys):
    argv = ("--device", "cpu", "--param-sets", "resnet18", "--optimizers", "clipped_sgd", "clipped_sstm",
            "--repeats", "1", "--warmup", "0")  # fmt: skip
    assert perf_optim.run(_args(*argv)) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if len(cells) == 7 and cells[0] not in ("optimizer", "---"):
            rows[cells[0]] = cells
    assert set(rows) == {"sgd", "clip+sgd", "adam", "adamw", "clipped_sgd", "clipped_sgd (norm)", "clipped_sstm"}
    ms = {name: float(cells[1]) for name, cells in rows.items()}
    assert all(v > 0 for v in ms.values())
    for name, cells in rows.items():
        assert abs(float(cells[2]) - ms[name] / ms["sgd"]) < 0.011
    targets = {name: cells[6] for name, cells in rows.items() if cells[6] != "-"}
    assert set(targets) == {"clipped_sgd (norm)", "clipped_sstm"}
    for name, cell in targets.items():
        match = re.fullmatch(r"≤ ([\d.]+)× (\S+): (yes|no) \(([\d.]+)\)", cell)
        assert match, cell
        limit, baseline, verdict, ratio = float(match[1]), match[2], match[3], float(match[4])
        assert baseline == {"clipped_sstm": "sgd", "clipped_sgd (norm)": "clip+sgd"}[name]
        assert abs(ratio - ms[name] / ms[baseline]) < 0.011
        assert (verdict == "yes") == (ratio <= limit)
