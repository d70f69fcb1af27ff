"""The wheel's contents as pyproject.toml declares them: every subpackage listed (the list is explicit because the
root ds_configs/ is mapped into the package), and every shipped DeepSpeed config reachable by name."""
from __future__ import annotations

import tomllib

from smolvlm_cli.train.dsconfig import SHIPPED, load_ds_config

from tests.conftest import ROOT


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_listed_for_the_wheel():
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "smolvlm_cli").rglob("__init__.py")}
    listed = set(_setuptools()["packages"])
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages in pyproject.toml"
    assert listed - on_disk == {"smolvlm_cli.ds_configs"}


def test_root_ds_configs_are_the_package_data_and_load_by_name():
    s = _setuptools()
    assert s["package-dir"] == {"smolvlm_cli.ds_configs": "ds_configs"}
    assert s["package-data"]["smolvlm_cli.ds_configs"] == ["*.json"]
    assert SHIPPED == ROOT / "ds_configs" and not (ROOT / "ds_configs").is_symlink()
    names = sorted(p.stem for p in SHIPPED.glob("*.json"))
    assert {"zero2", "zero3"} <= set(names)
    for name in names:
        assert load_ds_config(name)["zero_optimization"]["stage"] in (0, 2, 3)

