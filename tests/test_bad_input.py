"""Bad input, tried as a new user would: each case is refused in one line naming the file, row or key (exit 2,
no traceback, nothing written that looks done), or, where the input is legitimate, taken with a count."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import soundfile as sf
import yaml

from conftest import REPO
from test_workflow import SMALL, make_workdir, snakemake

from cltm_pipeline.cli import main

LOCALE = "es"


def cltm(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``cltm`` in this process; an exception escaping main() is a traceback a user would see: fail."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # how a few commands exit with a printed error
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, command: str) -> str:
    """The stderr of a refused command: exactly one error line, `cltm <command>: error: ...`, no traceback (the
    command's own progress lines, `<command> <what>: ...`, written before it failed, are not errors)."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(f"{command} ")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cltm {command}: error: "), err
    return lines[0]


@pytest.fixture()
def release(small_release, tmp_path) -> Path:
    """A private copy of one locale of the small demo release, to break."""
    root = tmp_path / "release"
    shutil.copytree(small_release / LOCALE, root / LOCALE)
    return root


def tsv(release: Path, name: str = "validated.tsv") -> Path:
    return release / LOCALE / name


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def clip(release: Path, k: int = 0) -> Path:
    """The k-th clip of validated.tsv (data row k + 2 of the file)."""
    path = lines(tsv(release))[k + 1].split("\t")[1]
    return release / LOCALE / "clips" / path


def ingest(capsys, release: Path, tmp_path: Path, *extra: str) -> tuple[int, str, str, Path]:
    out = tmp_path / "ingest"
    code, so, se = cltm(capsys, "ingest", "--release", release, "--locale", LOCALE, "--out", out, *extra)
    return code, so, se, out


def assert_nothing_done(out: Path) -> None:
    for name in ("utterances.parquet", "audio.npy", "ingest.json"):
        assert not (out / name).exists(), f"{name} written by a refused ingest"


# ------------------------------------------------------------------------------------ refused release input

def _drop_column(release: Path) -> None:
    rows = [line.rstrip("\n").split("\t") for line in lines(tsv(release))]
    k = rows[0].index("gender")
    tsv(release).write_text("".join("\t".join(r[:k] + r[k + 1:]) + "\n" for r in rows), encoding="utf-8")


def _non_utf8(release: Path) -> None:
    ls = lines(tsv(release))
    ls[5] = ls[5].replace("\t", "\tcaf\udce9 ", 1)  # a Latin-1 byte in a UTF-8 file
    tsv(release).write_bytes("".join(ls).encode("utf-8", "surrogateescape"))


def _ragged(release: Path) -> None:
    ls = lines(tsv(release))
    ls[7] = "\t".join(ls[7].split("\t")[:4]) + "\n"
    tsv(release).write_text("".join(ls), encoding="utf-8")


def _zero_byte(name: str):
    return lambda release: tsv(release, name).write_bytes(b"")


def _duplicate(release: Path) -> None:
    ls = lines(tsv(release))
    tsv(release).write_text("".join(ls[:10] + [ls[3]] + ls[10:]), encoding="utf-8")


def _all_garbage(release: Path) -> None:
    for mp3 in (release / LOCALE / "clips").glob("*.mp3"):
        mp3.write_bytes(b"not audio at all" * 20)


REFUSED = {
    "missing column": (_drop_column, r"es/validated.tsv: missing column\(s\) gender"),
    "non-UTF-8 row": (_non_utf8, r"es/validated.tsv: cannot parse as a Common Voice TSV: row 6: not UTF-8"),
    "ragged row": (_ragged, r"es/validated.tsv: cannot parse as a Common Voice TSV: row 8: 4 fields, the header has 13"),
    "zero-byte validated.tsv": (_zero_byte("validated.tsv"), r"es/validated.tsv: cannot parse as a Common Voice TSV: empty file"),
    "zero-byte test.tsv": (_zero_byte("test.tsv"), r"es/test.tsv: cannot parse as a Common Voice TSV: empty file"),
    "zero-byte clip_durations.tsv": (_zero_byte("clip_durations.tsv"), r"es/clip_durations.tsv: cannot parse .*: empty file"),
    "duplicate rows": (_duplicate, r"es/validated.tsv: rows 4 and 11: clip common_voice_es_\d+\.mp3 listed twice"),
    "no usable clip (all garbage)": (_all_garbage, r"locale es: 0 usable clips of 54 in .*validated.tsv, need at least 20; "
                                                   r"quarantined: 5\d× undecodable"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_bad_release_input_is_refused_in_one_line(case, release, tmp_path, capsys):
    breaker, pattern = REFUSED[case]
    breaker(release)
    code, _, err, out = ingest(capsys, release, tmp_path, "--min-clips", "20")
    assert code == 2
    assert re.search(pattern, one_line_error(err, "ingest")), err
    assert_nothing_done(out)


def test_locale_missing_from_release_is_named(release, tmp_path, capsys):
    code, _, err = cltm(capsys, "ingest", "--release", release, "--locale", "it", "--out", tmp_path / "o")
    assert code == 2
    assert f"{release / 'it'}: locale 'it' not found in Common Voice release {release}" in one_line_error(err, "ingest")


# ------------------------------------------------------------------- clips: quarantined with a reason, counted

def _stereo_44k(path: Path) -> None:
    t = np.arange(int(44100 * 1.5)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * 220 * t)
    sf.write(path, np.stack([tone, 0.5 * tone], axis=1), 44100, format="MP3")


QUARANTINE = {
    "missing clip": (lambda p: p.unlink(), "missing file"),
    "empty clip": (lambda p: p.write_bytes(b""), "empty file"),
    "garbage clip": (lambda p: p.write_bytes(b"\x00garbage" * 300), "undecodable: not recognised as audio"),
    "truncated clip": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]), "truncated: decodes to"),
    "very short clip": (lambda p: sf.write(p, 0.3 * np.ones(320), 16000, format="MP3"), "too short: "),
}


@pytest.mark.parametrize("case", list(QUARANTINE))
def test_bad_clip_is_quarantined_with_file_row_and_reason(case, release, tmp_path, capsys):
    breaker, reason = QUARANTINE[case]
    code, _, err, base = ingest(capsys, release, tmp_path / "base")  # the demo ships a few bad clips on purpose
    assert code == 0, err
    before = pl.read_csv(base / "quarantine.tsv", separator="\t", quote_char=None)
    target = clip(release, 3)
    assert str(target) not in before["file"].to_list()
    if case == "very short clip":  # the release's duration would call it truncated first
        dur = tsv(release, "clip_durations.tsv")
        dur.write_text("".join(x for x in lines(dur) if not x.startswith(target.name)), encoding="utf-8")
    breaker(target)
    code, _, err, out = ingest(capsys, release, tmp_path, "--min-clips", "20")
    assert code == 0, err
    q = pl.read_csv(out / "quarantine.tsv", separator="\t", quote_char=None)
    new = q.filter(pl.col("file") == str(target))
    assert q.height == before.height + 1 and new.height == 1 and new["row"][0] == 5, q
    assert new["reason"][0].startswith(reason), new["reason"][0]
    summary = json.loads((out / "ingest.json").read_text())
    assert summary["quarantined"] == q.height and summary["kept"] == 54 - q.height
    assert f"quarantined {q.height} clip(s)" in err
    table = pl.read_parquet(out / "utterances.parquet")
    assert target.name not in table["path"].to_list()


def test_stereo_44k_clip_is_downmixed_and_resampled(release, tmp_path, capsys):
    target = clip(release, 2)
    _stereo_44k(target)
    dur = tsv(release, "clip_durations.tsv")
    dur.write_text("".join(x for x in lines(dur) if not x.startswith(target.name)), encoding="utf-8")
    code, _, err, out = ingest(capsys, release, tmp_path)
    assert code == 0, err
    row = pl.read_parquet(out / "utterances.parquet").filter(pl.col("path") == target.name)
    assert row.height == 1 and abs(row["num_samples"][0] - 1.5 * 16000) < 0.05 * 16000, row


def test_unbalanced_quotes_are_text_not_syntax(release, tmp_path, capsys):
    ls = lines(tsv(release))
    f = ls[4].split("\t")
    f[3] = 'Dijo "hola y se fue'
    ls[4] = "\t".join(f)
    tsv(release).write_text("".join(ls), encoding="utf-8")
    code, _, err, out = ingest(capsys, release, tmp_path)
    assert code == 0, err
    table = pl.read_parquet(out / "utterances.parquet")
    assert 'Dijo "hola y se fue' in table["sentence"].to_list()


def test_unknown_gender_labels_are_counted_not_silently_other(release, tmp_path, capsys):
    ls = lines(tsv(release))
    for k, label in ((1, "F"), (2, "femal"), (3, "woman"), (4, "F")):
        f = ls[k].split("\t")
        f[8] = label
        ls[k] = "\t".join(f)
    tsv(release).write_text("".join(ls), encoding="utf-8")
    code, _, err, out = ingest(capsys, release, tmp_path)
    assert code == 0, err
    assert json.loads((out / "ingest.json").read_text())["gender_unmapped"] == {"F": 2, "femal": 1, "woman": 1}
    assert "4 clip(s) with a gender label of neither CV vocabulary, taken as unknown" in err
    table = pl.read_parquet(out / "utterances.parquet")
    assert table.filter(pl.col("gender_raw").is_in(["F", "femal", "woman"]))["gender"].unique().to_list() == ["unknown"]


# ----------------------------------------------------------------------------------------- configuration

def _config(tmp_path: Path, release: Path | None = None, **changes) -> Path:
    cfg = json.loads(json.dumps(SMALL))
    if release is not None:
        cfg.pop("demo")
        cfg["release"] = str(release)
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(key)
        else:
            node[key] = value
    work = make_workdir(tmp_path / "work", cfg)
    return work / "config" / "config.yaml"


def validate(capsys, path: Path, cwd: Path | None = None) -> tuple[int, str]:
    import os

    old = Path.cwd()
    os.chdir(cwd or path.parent.parent)
    try:
        code, _, err = cltm(capsys, "validate-config", path)
    finally:
        os.chdir(old)
    return code, err


@pytest.mark.parametrize("change, expected", [
    ({"taks": {}}, "(top level): Additional properties are not allowed ('taks' was unexpected)"),
    ({"tasks__gender__seeds": 0}, "tasks.gender.seeds: 0 is not valid: is less than the minimum of 1 or is not of type 'array'"),
    ({"tasks__gender__regime__n": 3}, "tasks.gender.regime.n: 3 must be a whole even number of utterances"),
    ({"tasks__gender__languages": ["es", "de", "xx"]}, "tasks.gender.languages.2: locale 'xx' is not in the languages sheet"),
    ({"models__tiny__source": "./no/such/model"}, "models.tiny.source: './no/such/model': no such local directory"),
    ({"tasks__gender__architectures__mhubert__hparams": {"epoch": 1}}, "tasks.gender.architectures.mhubert.hparams: unknown key(s) epoch"),
])
def test_config_typos_name_the_key(change, expected, tmp_path, capsys):
    code, err = validate(capsys, _config(tmp_path, **change))
    assert code == 2
    assert expected in one_line_error(err, "validate-config"), err


def test_yaml_syntax_error_gives_line_and_column(tmp_path, capsys):
    path = _config(tmp_path)
    text = path.read_text().replace("seeds: 2", "seeds: [2")
    path.write_text(text)
    code, err = validate(capsys, path)
    line = one_line_error(err, "validate-config")
    assert code == 2 and f"{path}: line " in line and ", column " in line, line


def test_duplicate_yaml_key_is_refused(tmp_path, capsys):
    path = _config(tmp_path)
    path.write_text(path.read_text() + "results: elsewhere\n")
    code, err = validate(capsys, path)
    assert code == 2
    assert "duplicate key 'results' (first at line" in one_line_error(err, "validate-config")


@pytest.mark.parametrize("sheet, expected", [
    ("", "cannot read the languages sheet: empty file"),
    ("locale\tname\tfamily\tiso639_3\nes\tSpanish\tRomance\tspa\nde\tGerman\n", "cannot read the languages sheet: row 3: 2 fields, the header has 4"),
    ("locale\tname\tfamily\tiso639_3\nes\tSpanish\t\tspa\n", "row 2 (es): empty family"),
])
def test_bad_languages_sheet_is_named(sheet, expected, tmp_path, capsys):
    path = _config(tmp_path)
    (path.parent / "languages.tsv").write_text(sheet, encoding="utf-8")
    code, err = validate(capsys, path)
    assert code == 2
    line = one_line_error(err, "validate-config")
    assert "languages.tsv: " in line and expected in line, line


def test_locale_missing_from_a_real_release_is_named(release, tmp_path, capsys):
    code, err = validate(capsys, _config(tmp_path, release=release))
    assert code == 2
    assert f"tasks.gender.languages.1: locale 'de' is not in the release {release}" in one_line_error(err, "validate-config")


def test_capacity_counts_quarantined_clips(small_release, tmp_path, capsys):
    # n = 8 needs 8 training clips of each gender (self = 2n over 2 genders): es has exactly 8 female ones; once
    # ingest has quarantined one of them, the check (before any subsets job) uses what is left
    release = tmp_path / "release"
    for loc in ("es", "de"):
        shutil.copytree(small_release / loc, release / loc)
    path = _config(tmp_path, release=release, tasks__gender__languages=["es", "de"], tasks__gender__regime__n=8)
    code, err = validate(capsys, path)
    assert code == 0, err
    train = {x.split("\t")[1] for x in lines(tsv(release, "train.tsv"))[1:]}
    for x in lines(tsv(release))[1:]:
        f = x.split("\t")
        if f[1] in train and f[8].startswith("female") and (release / LOCALE / "clips" / f[1]).stat().st_size > 0:
            (release / LOCALE / "clips" / f[1]).write_bytes(b"")
            break
    work = path.parent.parent
    code, _, err = cltm(capsys, "ingest", "--release", release, "--locale", LOCALE, "--out", work / "results/ingest/es")
    assert code == 0, err
    code, err = validate(capsys, path)
    assert code == 2
    line = one_line_error(err, "validate-config")
    got = re.search(r"tasks\.gender\.regime: locale es has (\d+) female training clips outside its test/dev speakers, "
                    r"the self cell needs 8", line)
    assert got and int(got[1]) < 8, line


# ------------------------------------------------------------------------------------------ models

def test_corrupt_local_model_directory_gets_no_hub_hint(tmp_path, capsys):
    model = tmp_path / "my model"
    assert cltm(capsys, "prepare-model", "--arch", "mhubert", "--source", "tiny", "--out", model)[0] == 0
    (model / "config.json").write_text("{bad", encoding="utf-8")
    code, _, err = cltm(capsys, "prepare-model", "--arch", "mhubert", "--source", model, "--out", tmp_path / "out")
    line = one_line_error(err, "prepare-model")
    assert code == 2 and "cannot load the local directory" in line and "huggingface-cli" not in line, line
    assert not (tmp_path / "out" / "cltm_model.json").exists()


def test_truncated_weights_are_one_line(tmp_path, capsys):
    model = tmp_path / "m"
    assert cltm(capsys, "prepare-model", "--arch", "mhubert", "--source", "tiny", "--out", model)[0] == 0
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    code, _, err = cltm(capsys, "prepare-model", "--arch", "mhubert", "--source", model, "--out", tmp_path / "out")
    assert code == 2 and "Error while deserializing header" in one_line_error(err, "prepare-model")
    from cltm_pipeline.errors import ModelError
    from cltm_pipeline.models.hubert_nn import load_encoder

    with pytest.raises(ModelError, match=r"cannot load the prepared model .*; delete the directory and rerun"):
        load_encoder(model)  # what a training job meets when the prepared model's weights were damaged


# --------------------------------------------------------------------------- matrices and the study CSV

STUDY = "model_id,type,lang_src,lang_tgt,seed,f1\n"


@pytest.mark.parametrize("body, expected", [
    ("m,single,es,,0,0.5\nm,single,ES,,1,0.5\n", "row 2 (line 3): language 'ES' differs only in case from 'es' (row 1)"),
    ("m,single,es,,0,0.5\nm,single,fr\xe9,,1,0.5\n", "line 3: not UTF-8"),
    ("m,single,es,,zero,0.5\n", "row 1 (line 2): non-numeric seed 'zero'"),
])
def test_malformed_study_csv_is_named(body, expected, tmp_path, capsys):
    path = tmp_path / "study.csv"
    path.write_bytes((STUDY + body).encode("latin-1"))
    code, _, err = cltm(capsys, "matrix", "--study-csv", path, "--out", tmp_path / "m")
    assert code == 2 and f"{path}: {expected}" in one_line_error(err, "matrix"), err
    assert not (tmp_path / "m").exists()


def test_several_metric_columns_say_the_flag(tmp_path, capsys):
    path = tmp_path / "study.csv"
    path.write_text("model_id,type,lang_src,lang_tgt,seed,eer,auc\nm,single,es,,0,0.1,0.9\n")
    code, _, err = cltm(capsys, "matrix", "--study-csv", path, "--out", tmp_path / "m")
    assert code == 2 and "choose one with --metric" in one_line_error(err, "matrix")


def test_runs_dir_typo_is_an_error_not_a_nan_matrix(tmp_path, capsys):
    code, _, err = cltm(capsys, "matrix", "--runs-dir", tmp_path / "runz", "--metric", "macro_f1", "--out", tmp_path / "m")
    assert code == 2 and f"--runs-dir {tmp_path / 'runz'}: no such directory" in one_line_error(err, "matrix")
    assert not (tmp_path / "m").exists()


def test_a_seed_missing_its_single_is_reported_missing(tmp_path, capsys):
    runs = tmp_path / "runs"
    for target in ("es", "de"):
        for donor in ("-", "es", "de"):
            for seed in (0, 1):
                if (target, donor, seed) == ("es", "-", 1):
                    continue
                rec = {"target": target, "donor": donor, "seed": seed, "metrics": {"macro_f1": 0.5 + 0.01 * seed + 0.1 * (donor != "-")}}
                p = runs / target / donor / f"seed{seed}" / "metrics.json"
                p.parent.mkdir(parents=True)
                p.write_text(json.dumps(rec))
    code, out, err = cltm(capsys, "matrix", "--runs-dir", runs, "--metric", "macro_f1", "--languages", "es", "de",
                          "--seeds", "0", "1", "--out", tmp_path / "m")
    assert code == 0, err
    assert "1 cells missing a run" in out
    missing = pl.read_csv(tmp_path / "m" / "missing.tsv", separator="\t")
    assert missing.select("target", "donor").rows() == [("es", "-")]


def test_typology_of_two_languages(tmp_path, capsys):
    out = tmp_path / "t.json"
    code, _, err = cltm(capsys, "typology", "--languages-sheet", REPO / "config" / "languages.tsv", "--locales", "es", "de", "--out", out)
    assert code == 0, err
    d = json.loads(out.read_text())["distances"]["genetic"]
    assert d[0][0] == d[1][1] == 0 and d[0][1] == d[1][0] and 0 < d[0][1] <= 1


# ------------------------------------------------------------------------------ Snakemake: before any job

def test_run_from_another_directory_finds_the_shipped_sheet(tmp_path):
    # a config of one's own, without a copy of config/languages.tsv: the workflow's sheet is used, for
    # validation and in the rules alike
    work = make_workdir(tmp_path / "elsewhere", SMALL)
    (work / "config" / "languages.tsv").unlink()
    proc = snakemake(work, "-n")
    assert "typology" in proc.stdout and "invalid configuration" not in proc.stdout + proc.stderr


def test_duplicate_key_in_a_snakemake_configfile_is_refused(tmp_path):
    work = make_workdir(tmp_path / "w", SMALL)
    cfg = work / "config" / "config.yaml"
    cfg.write_text(cfg.read_text() + "results: other\n")
    proc = snakemake(work, "-n", "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    assert "duplicate key 'results'" in proc.stdout + proc.stderr
    assert not (work / "results").exists()


def test_validate_config_cli_is_one_line_in_a_subprocess(tmp_path):
    path = _config(tmp_path, tasks__gender__seeds=0)
    proc = subprocess.run([sys.executable, "-m", "cltm_pipeline.cli", "validate-config", str(path)],
                          cwd=path.parent.parent, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert yaml.safe_load(path.read_text())["tasks"]["gender"]["seeds"] == 0
