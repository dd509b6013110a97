"""Hypothesis strategies that corrupt JSON documents the way real files get corrupted: a key removed,
a value of the wrong type, NaN/inf, negative or zero numbers, huge values, unknown or duplicate ids,
an emptied list, a duplicated record, truncated or garbled text. Shared by the fuzz tests."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# JSON text values a broken writer or a hand edit can leave behind
BAD_VALUES = [None, True, False, "", "12", "abc", [], [1, 2], {}, {"a": 1}, 0, -1, -1e9, 0.5,
              math.nan, math.inf, -math.inf, 1e308, -1e308, 10 ** 30, 10 ** 400, 999999, 2 ** 63]
KINDS = ("drop_key", "set_value", "empty_list", "duplicate_record", "truncate", "garble", "wrong_top")


def fuzz_settings(max_examples: int):
    """The hypothesis settings every fuzz test uses: reproducible examples, no example database, no
    deadline (file I/O and pycocotools vary in speed), fixtures reused across examples."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def write(path, text: str) -> None:
    """Write corrupted text; a lone surrogate (\udcff) becomes the invalid UTF-8 byte it stands for."""
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


def leaf_paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every (key/index) path in ``doc`` (containers and leaves)."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += leaf_paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += leaf_paths(v, prefix + (i,))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    for p in path[:-1]:
        doc = doc[p]
    return doc


@st.composite
def corruption(draw, doc: Any) -> tuple[str, str, tuple]:
    """Return ``(kind, text, path)``: the corrupted file text and where it was corrupted."""
    kind = draw(st.sampled_from(KINDS))
    doc = copy.deepcopy(doc)
    paths = [p for p in leaf_paths(doc) if p]
    if kind in ("truncate", "garble"):
        text = json.dumps(doc)
        if kind == "truncate":
            return kind, text[:draw(st.integers(0, max(len(text) - 1, 0)))], ()
        at = draw(st.integers(0, len(text)))
        junk = draw(st.sampled_from(["\x00", "\ufffd", "}", "]", ",", "NaN", "\\", '"', "{{", "\udcff"]))  # \udcff: byte 0xff
        return kind, text[:at] + junk + text[at:], ()
    if kind == "wrong_top":
        return kind, json.dumps(draw(st.sampled_from([[], "x", 3, None, [doc]]))), ()
    if kind == "drop_key":
        keyed = [p for p in paths if isinstance(_parent(doc, p), dict)]
        path = draw(st.sampled_from(keyed))
        del _parent(doc, path)[path[-1]]
    elif kind == "set_value":
        path = draw(st.sampled_from(paths))
        _parent(doc, path)[path[-1]] = copy.deepcopy(draw(st.sampled_from(BAD_VALUES)))
    else:
        lists = [p for p in leaf_paths(doc) if isinstance(_get(doc, p), list) and _get(doc, p)]
        if not lists:
            return kind, json.dumps(doc), ()
        path = draw(st.sampled_from(lists))
        target = _get(doc, path)
        if kind == "empty_list":
            target.clear()
        else:
            target.append(copy.deepcopy(target[draw(st.integers(0, len(target) - 1))]))
    return kind, json.dumps(doc), path


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc
