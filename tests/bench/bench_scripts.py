"""bench/ is not a package: the tests load its scripts from their paths. Also the tiny
`uprise eval` run whose ranking sections the section benches' tests read."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def load_script(name: str) -> ModuleType:
    """bench/<name>.py as a fresh module named bench_<name>, registered in `sys.modules`
    (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def tiny_section_run(root: Path, data_dir: Path, encoder: Path, lm: Path) -> list[str]:
    """`uprise eval` arguments (all but --output-dir) of a tiny held-out commonsense run under
    `root` (seed 3, held-out rows drawn with evaluation seed 5; 2 queries per task x 4 prompts
    in its ranking section)."""
    import yaml

    raw = yaml.safe_load((REPO / "configs" / "loco.yaml").read_text())
    config = root / "tiny.yaml"  # short demonstrations: the tiny LMs have a 512-token window
    config.write_text(yaml.safe_dump({**raw, "max_prompt_chars": 150}))
    return ["--config", str(config), "--data-dir", str(data_dir), "--encoder", str(encoder),
            "--scoring-lm", str(lm), "--clusters", "commonsense",
            "--train-clusters", "nli", "paraphrase", "--pool-per-task", "12",
            "--queries-per-task", "4", "--n-candidates", "3", "--epochs", "1", "--k", "2",
            "--batch-size", "8", "--seed", "3", "--eval-seed", "5", "--eval-per-task", "5",
            "--methods", "zero_shot", "--ranking-per-task", "2", "--ranking-prompts", "4",
            "--work-dir", str(root / "work"), "--no-progress"]
