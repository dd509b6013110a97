"""scripts/profile_iteration.py: every region is measured, and the split backward it times (loss side,
then network side) gives the gradients of one backward() (docs/performance.md)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_DATA = ["dataset.generate.num_train=8", "dataset.generate.num_val=4", "dataset.generate.image_size=96",
             "dataset.min_size=96", "dataset.max_size=96", "schedule.batch_size=2"]


@pytest.mark.slow
def test_profile_covers_the_iteration_and_the_split_backward_is_exact(shapes_cache, tmp_path):
    out = tmp_path / "profile.json"
    env = dict(os.environ, RSDET_CACHE=str(shapes_cache), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "profile_iteration.py"), "--detectors", "yolact,mask_rcnn,solov2",
         "--losses", "rs", "--iters", "1", "--warmup", "0", "--check-split", "--ops", "--json", str(out),
         "--", *TINY_DATA],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # the gradients of the split backward equal those of backward() (else the script exits non-zero)
    assert proc.stdout.count("--check-split: ") == 3 and "difference 0.00e+00" in proc.stdout
    results = json.loads(out.read_text())
    for r in results:
        m = r["medians"]
        for region in ("data", "net/backbone", "net/heads", "assign", "loss", "targets", "net/backward",
                       "loss/backward", "optimizer"):
            assert m.get(region, 0.0) > 0.0, (r["detector"], region)
        assert r["ops"]["net/backward"] > 0 and r["ops"]["assign"] > 0
    assert "| network | non-network |" not in proc.stdout  # plain table without --markdown
    assert "non-network" in proc.stdout
