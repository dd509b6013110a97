"""`rsdet report` command line: outputs, exit codes and messages."""

from report_fakes import make_run, make_sweep

from rsdet.report.cli import main


def test_report_prints_and_writes_beside(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    assert main([str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert "Found 8 runs" in out and "6 completed, 1 failed, 1 unreadable" in out
    assert "41.0 ± 1.4 (n=2)" in out and "failed [" in out
    assert "metrics.json" in err and "warning" in err         # the malformed file is named once
    for ext in ("md", "csv", "tex"):
        assert (sweep / f"report.{ext}").is_file()


def test_table_s8_layout_and_out(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep")
    code = main([str(sweep), "--rows", "loss", "--cols", "sampler.rpn,sampler.rcnn", "--metric", "AP",
                 "--out", str(tmp_path / "tables" / "s8"), "--filter", "seed=0"])
    assert code == 0
    assert (tmp_path / "tables" / "s8.md").read_text().count("| rs |") == 1
    assert "none / none" in capsys.readouterr().out
    assert not (sweep / "report.md").exists()


def test_list_axes(tmp_path, capsys):
    assert main([str(make_sweep(tmp_path)), "--list-axes"]) == 0
    out = capsys.readouterr().out
    assert "replicate" in out and "explained" in out and "determined by loss" in out
    assert "default table axes: loss, sampler" in out and "AP50" in out
    assert not (tmp_path / "report.md").exists()


def test_missing_dir_and_no_runs(tmp_path, capsys):
    assert main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "rsdet train" in err
    (tmp_path / "empty" / ".hydra").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no run records" in err and "rsdet train -m" in err


def test_dir_defaults_to_outputs_of_the_working_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([]) == 2 and "outputs does not exist" in capsys.readouterr().err
    make_run(tmp_path / "outputs" / "runs" / "a", loss="rs")
    assert main(["--no-write"]) == 0
    assert "Found 1 run under outputs" in capsys.readouterr().out


def test_bad_arguments_exit_2(tmp_path, capsys):
    make_run(tmp_path / "a", loss="rs")
    make_run(tmp_path / "b", loss="ce")
    assert main([str(tmp_path), "--rows", "los"]) == 2
    assert "Did you mean loss" in capsys.readouterr().err
    assert main([str(tmp_path), "--metric", "mAP"]) == 2
    assert "Available: AP" in capsys.readouterr().err
    assert main([str(tmp_path), "--filter", "loss"]) == 2
    assert main(["--bogus"]) == 2


def test_help_has_examples(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Table S8" in out and "--cols sampler.rpn,sampler.rcnn" in out


def test_unwritable_out_is_exit_1(tmp_path, capsys):
    make_run(tmp_path / "a")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([str(tmp_path / "a"), "--out", str(blocker / "sub" / "r")]) == 1
    assert "could not write" in capsys.readouterr().err
