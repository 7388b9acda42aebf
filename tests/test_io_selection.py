"""Run selections are parsed, never evaluated: what they may contain, against pandas' own query; every escape refused."""

import numpy as np
import pandas as pd
import pytest

from bkgxr.cli import main
from bkgxr.io.selection import select_rows

FRAME = pd.DataFrame(
    {
        "OBS_ID": [1, 2, 3, 4, 5],
        "ZEN_PNT": [10.0, 25.0, 35.0, np.nan, 55.0],
        "TARGET_NAME": ["Off data", "Crab", "Off data", "PKS 2155-304", "Off data"],
        "N_TELS": [4, 3, 4, 4, 2],
    }
)


@pytest.mark.parametrize(
    "selection",
    [
        'TARGET_NAME == "Off data"',
        "TARGET_NAME != 'Off data' and ZEN_PNT < 40",
        "20 <= ZEN_PNT < 50",
        "not (ZEN_PNT > 30) or N_TELS == 2",
        "(ZEN_PNT > 30) & (N_TELS >= 4) | (OBS_ID == 1)",
        "~(N_TELS == 4)",
        "OBS_ID in [1, 3, 5] and TARGET_NAME not in ('Crab',)",
        "ZEN_PNT > -1.5e1",
        'N_TELS == 4 and TARGET_NAME == "Off data" or ZEN_PNT >= 55',
    ],
)
def test_allowed_selections_keep_the_rows_pandas_query_keeps(selection):
    expected = FRAME.query(selection)["OBS_ID"].tolist()
    assert select_rows(FRAME, selection)["OBS_ID"].tolist() == expected


@pytest.mark.parametrize(
    ("selection", "refused"),
    [
        ("TARGET_NAME == 'Off data' and @os.system('touch pwned') == 0", "not a valid expression"),
        ("__import__('os').system('touch pwned')", "Call"),
        ("OBS_ID.__class__ == 1", "Attribute"),
        ("OBS_ID == len('ab')", "Call"),
        ("OBS_ID[0] == 1", "Subscript"),
        ("OBS_ID + 1 == 2", "BinOp"),
        ("(lambda: 1)() == 1", "Call"),
        ("[x for x in OBS_ID] == [1]", "ListComp"),
        ("f'{OBS_ID}' == '1'", "JoinedStr"),
        ("(y := 1) == 1", "NamedExpr"),
        ("OBS_ID == __builtins__", "unknown column"),
        ("OBS_ID", "Name where a condition"),
        ("1", "Constant where a condition"),
        ("SECRET == 1", "unknown column 'SECRET'"),
        ("OBS_ID in OBS_ID", "needs a list"),
        ("OBS_ID == b'1'", "not a literal"),
        ("OBS_ID == 1; import os", "not a valid expression"),
        ("x" * 20_000, "longer than"),
        # what a careful attacker tries next: values of another kind than their column, deep nesting, oversized literals
        ("ZEN_PNT < 'a'", "column ZEN_PNT \\(number\\) compared with 'a' \\(text\\)"),
        ("TARGET_NAME == 3", "column TARGET_NAME \\(text\\) compared with 3"),
        ("OBS_ID == True", "compared with True \\(bool\\)"),
        ("OBS_ID == TARGET_NAME", "compared with column TARGET_NAME"),
        ("OBS_ID in [1, 'a']", "compared with 'a'"),
        ("OBS_ID in [1, [2]]", "not a literal"),
        ("OBS_ID == [1]", "a list outside 'in'"),
        ("1 < 2", "a comparison without a column"),
        ("'a' == 'a' or OBS_ID == 1", "a comparison without a column"),
        ("not " * 2000 + "OBS_ID == 1", "nested deeper than 50"),
        ("~" * 9000 + "(OBS_ID == 1)", "nested too deeply to parse"),
        ("OBS_ID == " + "-" * 60 + "1", "nested deeper than 50"),
        ("OBS_ID == 1" + "0" * 5000, "is not a valid expression"),
        ("OBS_ID is 1", "operator Is"),
        ("OBS_ID == 1\x00", "not a valid expression"),
        ("OBS_ID == None", "not a literal"),
        ("OBS_ID == ...", "not a literal"),
        ("OBS_ID == 1 if True else False", "IfExp"),
        ("OBS_ID == {1}", "Set"),
        ("OBS_ID == {'a': 1}", "Dict"),
        ("(OBS_ID == 1) == (OBS_ID == 2)", "Compare is not a literal"),
        ("ZEN_PNT == nan", "unknown column 'nan'"),
        ("OBS_ID == __import__", "unknown column '__import__'"),
        ("OBS_ID == 1 and __debug__", "Name where a condition"),
        ("await OBS_ID", "Await"),
        ("yield", "not a valid expression"),
    ],
)
def test_every_escape_is_refused_with_one_line(selection, refused, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=refused) as err:
        select_rows(FRAME, selection)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()


def test_a_refused_selection_is_quoted_short():
    with pytest.raises(ValueError, match=r"\.\.\. \(9\d{3} characters\) refused") as err:
        select_rows(FRAME, "not " * 2400 + "OBS_ID == 1")
    assert len(str(err.value)) < 250


@pytest.mark.parametrize("query", ["1", "OBS_ID", "ZEN_PNT < 'a'", "", "OBS_ID in [1, [2]]"])
def test_the_cli_prints_one_line_and_exit_code_2_for_a_bad_query(sim_store, tmp_path, capsys, query):
    out = tmp_path / "m.fits"
    assert main(["build", str(sim_store.root), "--out", str(out), "--query", query, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bkgxr: error: selection") and err.count("\n") == 1 and not out.exists()


def test_the_cli_refuses_a_query_that_would_run_code(sim_store, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.fits"
    query = "TARGET_NAME == 'Off data' and @os.system('touch pwned') == 0"
    assert main(["build", str(sim_store.root), "--out", str(out), "--query", query, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bkgxr: error: selection") and err.count("\n") == 1
    assert not (tmp_path / "pwned").exists() and not out.exists()


@pytest.mark.parametrize("target", ["obs-index.fits.gz", "hdu-index.fits.gz", "data/obs_000001.fits.gz"])
def test_out_may_not_be_a_file_of_the_store(sim_store, tmp_path, capsys, target):
    """The output would replace an input: refused before any run is read, the input unchanged."""
    path = sim_store.root / target
    before = path.read_bytes()
    link = tmp_path / "link.fits"
    link.symlink_to(path)  # through a symlink too
    for out in (path, link):
        assert main(["build", str(sim_store.root), "--out", str(out), "--quiet"]) == 2  # a bad argument
        err = capsys.readouterr().err
        assert "is a file of the store being read" in err and err.count("\n") == 1
    assert path.read_bytes() == before
