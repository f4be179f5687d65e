"""The ```python blocks of README.md and docs/*.md run as they stand, offline (HF_HUB_OFFLINE=1), on the built-in data.

Each page says near its top how its blocks run: `<!-- blocks: in order -->` (one script, the blocks in page order) or
`<!-- blocks: each alone -->` (each block on its own). Blocks fenced otherwise (```bash, ```text) are not run. Every
script starts in a fresh empty working directory, so the relative paths the blocks write (`outputs/...`) land there.

One runner process (`python tests/test_docs.py --runner ...`) imports torch, transformers and hfssl once (about 20 s on
a busy 2-core machine) and forks a child per script: each child has its own working directory, namespace and state.
By hand: `python tests/test_docs.py docs/text.md` runs one page and prints what failed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MODES = ("in order", "each alone")
MODE = re.compile(r"<!--\s*blocks:\s*(.*?)\s*-->")
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)
SCRIPT_TIMEOUT_S = 240  # one page's script, or one block of an "each alone" page


def page_mode(text: str, page: str) -> str:
    """The page's `<!-- blocks: ... -->` value, or a ValueError naming what is allowed."""
    match = MODE.search(text)
    if match is None or match.group(1) not in MODES:
        found = match.group(1) if match else "no <!-- blocks: ... --> comment"
        raise ValueError(
            f"{page}: got {found!r}; put <!-- blocks: in order --> or <!-- blocks: each alone --> at its top."
        )
    return match.group(1)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the first code line, code) of each ```python block, in page order."""
    return [(text.count("\n", 0, match.start(1)) + 1, match.group(1)) for match in PYTHON_BLOCK.finditer(text)]


def scripts(page: Path) -> list[list[tuple[int, str]]]:
    """The scripts a page runs: all its blocks as one, or one per block."""
    text = page.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    if not blocks:
        return []
    return [blocks] if page_mode(text, page.name) == "in order" else [[block] for block in blocks]


def first_line(code: str) -> str:
    return next((line.strip() for line in code.splitlines() if line.strip()), "")


def _took_too_long(signum: int, frame: object) -> None:
    raise TimeoutError(f"the script ran for more than {SCRIPT_TIMEOUT_S} s")


def run_script(page: str, blocks: list[tuple[int, str]]) -> dict | None:
    """Run the blocks in a forked child, in a fresh temporary working directory; None when they all ran, else what
    failed (the block's line and first line, the error)."""
    workdir = tempfile.mkdtemp(prefix="hfssl-docs-", dir=os.getcwd())  # removed below, whatever the blocks wrote
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report a failure through the pipe, leave without cleanup handlers
        os.close(read)
        status = 0
        try:
            signal.signal(signal.SIGALRM, _took_too_long)
            signal.alarm(SCRIPT_TIMEOUT_S)
            os.chdir(workdir)
            namespace = {"__name__": "__main__"}
            for line, code in blocks:
                start = time.perf_counter()
                try:
                    exec(compile(code, f"{page}:{line}", "exec"), namespace)
                except BaseException as error:  # noqa: BLE001 (reported to the parent)
                    lines = traceback.format_exception(type(error), error, error.__traceback__)
                    report = {"line": line, "first_line": first_line(code), "error": "".join(lines)[-4000:]}
                    os.write(write, json.dumps(report).encode())
                    status = 1
                    break
                print(f"--- {page}, block at line {line}: {time.perf_counter() - start:.1f} s", flush=True)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    shutil.rmtree(workdir, ignore_errors=True)
    if chunks:
        return json.loads(b"".join(chunks))
    if status != 0:
        return {"line": blocks[0][0], "first_line": first_line(blocks[0][1]), "error": f"the child died ({status})"}
    return None


def runner(page_paths: list[str], results_path: str) -> None:
    """Import the heavy libraries once, then run every script of the pages; write {page: [failures], ...} and the
    seconds each page took to `results_path`."""
    import datasets  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import Trainer  # noqa: F401 (the lazy trainer module is the slow part)

    import hfssl  # noqa: F401

    results = {}
    for page_path in page_paths:
        page = Path(page_path)
        name = str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else str(page)
        start, failures = time.perf_counter(), []
        for blocks in scripts(page):
            print(f"--- {name}: blocks at lines {[line for line, _ in blocks]}", flush=True)
            failure = run_script(name, blocks)
            if failure is not None:
                failures.append(failure)
        results[name] = {"failures": failures, "seconds": round(time.perf_counter() - start, 1)}
        print(f"--- {name}: {results[name]['seconds']} s, {len(failures)} failed", flush=True)
    Path(results_path).write_text(json.dumps(results))


def run_pages(pages: list[Path], timeout: float, capture: bool = True) -> tuple[dict, str]:
    """Run the runner in a subprocess with the Hub switched off; ({page: result}, the end of its output, or "" when
    `capture` is False and it went to this process's output)."""
    # CPU only, one intra-op thread (tiny models on a busy CPU run faster so), no Hub
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "Agg",
                   "OMP_NUM_THREADS": "1"}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        results_path = os.path.join(folder, "results.json")
        command = [sys.executable, __file__, "--runner", results_path, *map(str, pages)]
        completed = subprocess.run(command, cwd=folder, env=environment, capture_output=capture, text=True,
                                   timeout=timeout)  # fmt: skip
        output = (completed.stdout[-6000:] + completed.stderr[-6000:]) if capture else ""
        if not os.path.exists(results_path):
            raise RuntimeError(f"the docs runner stopped (exit {completed.returncode}):\n{output}")
        return json.loads(Path(results_path).read_text()), output


def describe(page: str, failures: list[dict]) -> str:
    return "\n\n".join(
        f"{page}, block at line {failure['line']} ({failure['first_line']!r}) failed:\n{failure['error']}"
        for failure in failures
    )


def test_every_page_says_how_its_blocks_run_and_the_readme_links_every_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        page_mode(text, page.name)
        if page.parent.name == "docs":
            assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):  # relative links point at files that exist
            assert (page.parent / target).exists(), f"{page.name} links {target}, which does not exist"


def test_block_extraction_and_modes():
    text = "<!-- blocks: each alone -->\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\nz = 3\n```\n"
    assert page_mode(text, "page") == "each alone"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = 2\nz = 3\n")]
    with pytest.raises(ValueError, match="in order"):
        page_mode("```python\nx = 1\n```\n", "page")


@pytest.fixture(scope="module")
def results():
    found, _ = run_pages(PAGES, timeout=SCRIPT_TIMEOUT_S * len(PAGES))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_python_blocks_run_offline(page, results):
    name = str(page.relative_to(ROOT))
    assert name in results, f"{name} was not run"
    failures = results[name]["failures"]
    assert not failures, describe(name, failures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--runner"]:
        runner(sys.argv[3:], sys.argv[2])
    else:  # by hand: python tests/test_docs.py [PAGE ...]
        chosen = [Path(path).resolve() for path in sys.argv[1:]] or PAGES
        found, _ = run_pages(chosen, timeout=SCRIPT_TIMEOUT_S * len(chosen), capture=False)
        for page, result in found.items():
            print(f"{page}: {result['seconds']} s", describe(page, result["failures"]) or "ok", sep="\n")
