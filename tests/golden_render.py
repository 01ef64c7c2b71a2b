"""The repository's own specs rendered, with what depends on the machine normalised, so a test can
hold a refactoring to byte-identical rendered files (tests/fixtures/rendered/).

Normalised: the output, model, data and repository paths (placeholders), the interpreter's path,
the provenance a manifest carries (tlf version, package versions, git commit), the rendered-file
hashes (recomputed over the normalised text) and the records' ``format_version``.

    python tests/golden_render.py OUT_DIR      # write the fixture from the checkout on sys.path
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

SPECS = ("blog/probe", "blog/climb-400", "blog/climb-5000", "blog/tune", "blog/best", "demo")
PROVENANCE = ("tlf", "versions", "git_commit", "spec_sha256")   # spec_sha256 covers the --set paths


def render(repo: Path, spec: str, model: Path, data: Path, out: Path) -> None:
    command = [sys.executable, "-m", "telecom_lf.cli", "render", str(repo / "experiments" / f"{spec}.yaml"),
               "--out", str(out), f"--set=model={model}", f"--set=data.dir={data}"]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=repo)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} -> {done.returncode}\n{done.stderr}")


def normalised(out: Path, replacements: dict[str, str]) -> dict[str, str]:
    """Every rendered file under ``out``: relative path -> normalised text."""
    texts = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8")
        for real, placeholder in sorted(replacements.items(), key=lambda item: -len(item[0])):
            text = text.replace(real, placeholder)
        texts[str(path.relative_to(out))] = text
    for name, text in texts.items():
        if Path(name).name in ("manifest.json", "experiment.json"):
            texts[name] = _record(name, text, texts)
    return texts


def _record(name: str, text: str, texts: dict[str, str]) -> str:
    record = json.loads(text)
    record.pop("format_version", None)
    for key in PROVENANCE:
        if key in record:
            record[key] = f"<{key}>"
    if isinstance(record.get("files"), dict):
        run = name.rsplit("/", 1)[0]
        record["files"] = {f: hashlib.sha256(texts[f"{run}/{f}"].encode()).hexdigest() for f in record["files"]}
    return json.dumps(record, ensure_ascii=False, indent=2) + "\n"


def rendering(repo: Path, spec: str, model: Path, data: Path, out: Path) -> dict[str, str]:
    render(repo, spec, model, data, out)
    return normalised(out, {str(out): "<OUT>", str(model): "<MODEL>", str(data): "<DATA>", str(repo): "<REPO>",
                            sys.executable: "<PYTHON>", str(Path(sys.executable).parent): "<BIN>"})


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import CACHE

    from telecom_lf import data, tiny

    repo = Path(os.environ.get("TLF_GOLDEN_REPO", Path(__file__).resolve().parents[1]))
    target = Path(sys.argv[1])
    work = Path(sys.argv[2])
    model = tiny.cached(CACHE / "models", tiny.TinySpec(arch="gemma"))
    blog = data.prepare_synthetic(work / "data", mode="blog")
    for spec in SPECS:
        for name, text in rendering(repo, spec, model, blog, work / "runs" / spec.replace("/", "-")).items():
            path = target / spec.replace("/", "-") / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
