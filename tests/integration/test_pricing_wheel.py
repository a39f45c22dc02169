"""The price overrides ship inside the wheel and genai-prices is found as a dependency:
build the wheel, install it in a fresh venv, price a call from each source.

The fresh venv sees the dev venv's third-party packages through a ``.pth`` line (baton_nb's
own dependencies are not what is under test), but never the source tree: the check runs
from an empty directory with no PYTHONPATH, so ``pricing/`` at the top of the repository
cannot be what answers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHECK = """
import json, sys
from baton_nb._usage import Usage
from baton_nb import pricing
from baton_nb.pricing import _registry
print(json.dumps({
    "module": pricing.__file__,
    "data_dir": str(_registry.data_dir()),
    "cost": str(pricing.price("openai/gpt-4o-mini", Usage(input_tokens=1000, output_tokens=100))),
    "tier": str(pricing.price("google/gemini-2.5-pro", Usage(input_tokens=300_000))),
    "models": len(pricing.known_models()),
    "override": pricing.lookup("google/gemini-1.5-flash-8b").price_source,
    "genai": pricing.lookup("openai/gpt-4o-mini").price_source,
    "sys_path": sys.path,
}))
"""


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_prices_from_an_installed_wheel(tmp_path: Path) -> None:
    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", dist, REPO, cwd=work)  # fmt: skip
    (wheel,) = dist.glob("baton_nb-*.whl")

    run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=work)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        "-q", wheel, cwd=work)  # fmt: skip
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=work).strip())  # fmt: skip
    (site / "_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONWARNINGS"] = "error::UserWarning"
    result = json.loads(run(python, "-I", "-c", CHECK, cwd=work, env=env))

    assert Path(result["module"]).is_relative_to(site)
    assert Path(result["data_dir"]) == site / "baton_nb" / "_pricing_data"
    assert result["cost"] == "0.00021"
    assert result["tier"] == "0.75"  # 300k prompt tokens at the >200k rate of $2.50
    assert result["models"] >= 1000
    assert result["override"] == "baton_nb override"
    assert result["genai"].startswith("genai-prices 0.2.")
    assert not any(Path(p) == REPO for p in result["sys_path"] if p)
