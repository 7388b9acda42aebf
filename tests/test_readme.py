"""Every command of the README runs, copied from the README text itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```(bash|python)\n(.*?)```", README.read_text(), flags=re.S)


def _env(hess_dir: Path) -> dict[str, str]:
    return {**os.environ, "GAMMAPY_DATA": str(hess_dir.parent), "MPLBACKEND": "Agg"}


def test_the_two_set_up_commands_are_there_and_ci_runs_the_second():
    commands = [code.strip() for lang, code in BLOCKS if lang == "bash"]
    assert commands[0] == 'python -m pip install -e . && bkgxr demo'
    assert commands[1] == 'python -m pip install -e ".[test]" && python -m pytest -q'
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci


@pytest.mark.slow
def test_every_shell_block_runs(hess_dir, tmp_path):
    for lang, code in BLOCKS:
        if lang != "bash":
            continue
        # the install steps are what CI itself runs; here the package is installed already
        script = re.sub(r"^python -m pip install [^&\n]*&& ", "", code, flags=re.M)
        if "pytest" in script:
            continue
        # background services (the dask scheduler and workers) end with the block
        script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script
        done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=_env(hess_dir), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
    for name in ("bkgxr-demo/bkg-models.fits", "bkgxr-demo/overview.png", "bkg-models.fits", "bkg-models.png",
                 "validation.csv", "validation.png", "bkg-obs.png", "bkg-models-cluster.fits"):
        assert (tmp_path / name).stat().st_size > 0, name
    # the cluster build writes the same models as the local one
    from astropy.io import fits

    with fits.open(tmp_path / "bkg-models.fits") as local, fits.open(tmp_path / "bkg-models-cluster.fits") as cluster:
        assert [h.name for h in local] == [h.name for h in cluster]
        for a, b in zip(local[4:], cluster[4:]):
            assert (a.data["BKG"] == b.data["BKG"]).all()


@pytest.mark.slow
def test_the_python_example_runs(hess_dir, tmp_path):
    (code,) = [code for lang, code in BLOCKS if lang == "python"]
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(hess_dir), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Background2D" in done.stdout
    assert "\n0-20 " in done.stdout and "\n40-90 " in done.stdout  # the rate table's rows are the band names
    assert (tmp_path / "bkg-models-api.fits").is_file()


def test_the_notebook_figures_the_readme_quotes_are_the_notebook_outputs():
    import json

    notebook = json.loads((README.parent / "notebooks" / "background_model.ipynb").read_text())
    outputs = "".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                      for cell in notebook["cells"] for o in cell.get("outputs", []))
    text = README.read_text()
    for quoted, printed in [("0.998 × `obs_rate × ONTIME", "(ratio 0.998)"), ("the ratio would be 1.071", "(ratio 1.071)"),
                            ("obs/pred std 0.319 and 0.157", "std 0.319"), ("obs/pred std 0.319 and 0.157", "std 0.157")]:
        assert quoted in text and printed in outputs, (quoted, printed)
