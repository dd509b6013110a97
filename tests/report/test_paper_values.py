"""The supplementary's published numbers (rsdet/report/paper_values.json) and their lookups.

The spot values below were read off the supplementary's tables by hand, independently of the JSON file."""

import json
from importlib import resources

import pytest

from rsdet.errors import RsdetError
from rsdet.report.paper import PaperValueError, column_key, load_paper_tables, paper_cell, paper_value

TABLES = [f"S{i}" for i in range(1, 12)]

# (table, row, column, metric, value as printed in the supplementary)
SPOT_VALUES = [
    ("S1", "No prioritization", "Constant weighting / 1", None, 38.9),
    ("S1", "Score-based [7]", "Self-balance (SB) / value", None, 39.9),
    ("S1", "Ranking-based [13]", "magnitude", None, 39.6),
    ("S2", "aLRP Loss [13]", "Heavy Training / Epoch 1", None, 9.4),
    ("S2", "RS Loss", "Standard Training / Epoch 12", None, 39.6),
    ("S2", "RS Loss", "Epoch 100", None, 41.2),
    ("S3", "AP", "1.50", None, 39.9),
    ("S3", "AP", "Default", None, 39.5),
    ("S4", "AP", "0.25", None, 39.0),
    ("S4", "AP", "0.50", None, 39.9),
    ("S4", "AP", "1.00", None, 39.4),
    ("S5", "Cascade R-CNN", "oLRP ↓", None, 67.0),
    ("S5", "RS Cascade R-CNN", "AP ↑", "AP", 41.3),
    ("S6", "Binary", "Segmentation / AP", None, 29.1),
    ("S6", "(IoU+Dice)/2", "Detection", "AP75", 34.8),
    ("S6", "Dice", "Detection / AP_50", None, 54.3),
    ("S7", "COCO | Random | Random", "actual pos:neg task ratio / R-CNN", None, 702.0),
    ("S7", "LVIS | None | None", "actual pos:neg task ratio / R-CNN", None, 10470.0),
    ("S7", "COCO | None | None", "actual pos:neg instance ratio / R-CNN", None, 13.0),
    ("S7", "COCO | Random | Random", "desired pos:neg instance ratio / R-CNN", None, 3.0),
    ("S7", "COCO | None | Random", "AP", None, 39.3),
    ("S8", "Cross-entropy | Random | Random", "AP", None, 37.6),
    ("S8", "Focal Loss [9] | None | None", "AP_75", None, 34.2),
    ("S8", "RS Loss (Ours) | None | Random", "AP_50", "AP50", 59.6),
    ("S9", "Cascade R-CNN", "RS Loss (sec)", None, 2.26),
    ("S9", "SOLOv2-light", "Standard Loss (sec)", None, 0.64),
    ("S10", "Object Detection | RS-Faster R-CNN | R-50 | 12 | –", "oLRP↓", None, 67.9),
    ("S10", "Object Detection | RS-Mask R-CNN+ | X-101-DCN | 36 | [480, 960]", "fps", None, 6.4),
    ("S10", "Instance Segmentation | RS-Mask R-CNN | R-101 | 36 | [640, 800]", "AP_75↑", None, 43.8),
    ("S11", "10^-3", "Mask R-CNN / fps", None, 11.0),
    ("S11", "0.60", "RS-Mask R-CNN", "segm/AP", 25.2),
    ("S11", "0.60", "RS-Mask R-CNN / fps", None, 11.7),
    ("S11", "0.80", "RS-Mask R-CNN / AP_r", None, 6.3),
    ("S11", "0.10", "Mask R-CNN", "AP", 15.4),
]


@pytest.mark.parametrize(("table", "row", "col", "metric", "expected"), SPOT_VALUES)
def test_spot_values_equal_the_supplementary(table, row, col, metric, expected):
    assert paper_value(table, row, col, metric) == expected


def test_every_table_of_the_supplementary_is_present():
    assert list(load_paper_tables()) == TABLES


@pytest.mark.parametrize("name", TABLES)
def test_table_shape_is_consistent(name):
    spec = load_paper_tables()[name]
    assert spec["title"] and spec["section"].startswith("S")
    rows, cols, values = spec["rows"], spec["cols"], spec["values"]
    assert len(values) == len(rows) > 0
    assert all(len(line) == len(cols) for line in values), [len(line) for line in values]
    assert len({r["label"] for r in rows}) == len(rows)  # row labels are unique
    assert len({column_key(c) for c in cols}) == len(cols)  # so are columns, group included
    assert spec["metrics"] == list(dict.fromkeys(c["metric"] for c in cols))
    for r in rows:
        if "cells" in r:
            assert len(r["cells"]) == len(spec["row_header"])
    for line in values:
        for v in line:
            assert v is None or isinstance(v, (int, float)) or (isinstance(v, str) and v.startswith("1:"))


def test_values_are_as_printed_not_fractions():
    tables = load_paper_tables()
    ap_cells = [v for t in tables.values() for line in t["values"] for v, c in zip(line, t["cols"])
                if c["metric"].endswith("AP") and isinstance(v, float)]
    assert ap_cells and min(ap_cells) > 1.0  # e.g. 39.6, never 0.396


def test_configs_map_rows_and_columns_to_run_settings():
    tables = load_paper_tables()
    assert [c["config"]["loss.delta"] for c in tables["S4"]["cols"]] == [0.25, 0.40, 0.50, 0.60, 0.75, 1.00]
    s8 = {r["label"]: r["config"] for r in tables["S8"]["rows"]}
    assert s8["Focal Loss [9] | None | Random"] == {"loss": "focal", "sampler.rpn": "none", "sampler.rcnn": "random"}
    assert [r["config"]["loss.weighting"] for r in tables["S1"]["rows"]] == [
        "none", "centerness", "score", "iou", "rank"]
    assert tables["S11"]["rows"][0]["config"] == {"score_threshold": 1e-4}


def test_ratio_and_not_available_cells():
    assert paper_cell("S7", "LVIS | None | None", "actual pos:neg instance ratio / RPN") == "1:3487"
    assert paper_value("S7", "LVIS | None | None", "desired pos:neg instance ratio / RPN") is None


def test_json_loads_through_the_package_and_copies_are_independent():
    text = resources.files("rsdet.report").joinpath("paper_values.json").read_text(encoding="utf-8")
    assert set(json.loads(text)["tables"]) == set(TABLES)
    first = load_paper_tables()
    first["S4"]["values"][0][0] = -1
    assert paper_value("S4", "AP", "0.25") == 39.0
    assert paper_value("4", " ap ", "0.25") == 39.0  # table number alone, label case and spacing ignored


@pytest.mark.parametrize(("args", "message"), [
    (("S12", "AP", "0.50"), "valid tables: S1, S2"),
    (("S8", "RS Loss", "AP"), "valid rows: Cross-entropy | Random | Random"),
    (("S4", "AP", "0.30"), "valid columns: 0.25; 0.40"),
    (("S6", "IoU", "AP"), "Segmentation / AP; Detection / AP"),
    (("S11", "0.60", "RS-Mask R-CNN"), "pass a metric"),
    (("S5", "Cascade R-CNN", "AP ↑", "oLRP"), "does not report metric 'oLRP'"),
])
def test_unknown_names_raise_with_the_valid_choices(args, message):
    with pytest.raises(PaperValueError, match=message.replace("|", r"\|").replace("(", r"\(")) as info:
        paper_value(*args)
    assert isinstance(info.value, RsdetError)
