"""The client installs on its own and never pulls torch: built wheel metadata, its dependency closure, and
what importing every module loads."""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"


def _name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: list[str]) -> set[str]:
    """Every distribution the named ones need (as installed here), markers for extras excluded."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in reqs if "extra ==" not in r]
    return seen


def test_wheel_depends_on_httpx_and_pydantic_only_and_no_torch_anywhere(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(CLIENT, src, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("darling_reward_client-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = [
            line.split(":", 1)[1].strip()
            for line in z.read(meta).decode().splitlines()
            if line.startswith("Requires-Dist:")
        ]
    base = [r for r in requires if "extra ==" not in r]
    assert sorted(_name(r) for r in base) == ["httpx", "pydantic"]
    for module in ("client", "errors", "transport", "schemas", "py.typed", "integrations/trl", "integrations/verl"):
        assert any(n.startswith(f"darling_client/{module}") for n in names), module
    assert "darling_client/integrations/openrlhf_reward_func.py" in names
    assert not any(n.startswith(("service/", "models/")) for n in names)
    closure = _closure([_name(r) for r in base])
    assert {"httpx", "pydantic", "pydantic-core"} <= closure
    # Optional extras (the gRPC transport) must not bring torch either.
    with_extras = _closure([_name(r) for r in requires])
    for deps in (closure, with_extras):
        assert not {n for n in deps if n == "torch" or n.startswith(("nvidia-", "triton"))}


def test_importing_every_module_loads_no_torch() -> None:
    code = (
        "import sys\n"
        "import darling_client, darling_client.client, darling_client.transport, darling_client.errors\n"
        "import darling_client.integrations.trl, darling_client.integrations.openrlhf\n"
        "import darling_client.integrations.verl, darling_client.integrations.slime\n"
        "import darling_client.integrations.openrlhf_reward_func\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'numpy', 'service'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
