"""Every code block of the README and of docs/ runs as written.

Each fenced block is run as a user would run it, in one fresh directory per
document (holding a copy of ``examples/`` and ``benchmarks/``, which the
documents refer to), against the installed package. An HTML comment on the
line before a block says how, when the default does not fit:

``<!-- test: run [in DIR] [with skeleton NAME (...)] -->``
    Run the block (the default for ``sh`` and ``python``) in DIR.
``<!-- test: write PATH [with skeleton NAME (...)] -->``
    The block is a file of a small project (``cpp``, ``c``, ``fortran``, ``cmake``, ``make``).
``<!-- test: output of: COMMAND -->``
    The block shows COMMAND's output: the test runs COMMAND and compares the shape
    (same lines, same words; numbers may differ).
``<!-- test: install-then: COMMAND -->``
    The install commands: the suite has installed already, so only COMMAND runs; the
    block's test command must be the one ``.ci/run`` runs.
``<!-- test: skip: REASON -->``
    Not run, for the stated reason (a long run that another test covers).

A partial block is compiled or run inside the named skeleton below, never
skipped silently; a block of another language without a directive fails.
Projects written by a document are built by its blocks and then driven
through one round trip from Python.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

import pybridge

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ["README.md", "benchmarks/README.md"] + sorted(f"docs/{p.name}" for p in (REPO / "docs").glob("*.md"))
TIMEOUT = 300


@dataclass
class Block:
    document: str
    line: int
    language: str
    code: str
    directive: str  # "" when there is none

    def where(self) -> str:
        return f"{self.document}:{self.line}"


_FENCE = re.compile(r"^```(\w*)\s*$")
_DIRECTIVE = re.compile(r"^<!--\s*test:\s*(.*?)\s*-->\s*$")


def blocks_of(document: str) -> List[Block]:
    lines = (REPO / document).read_text().splitlines()
    found: List[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        directive = _DIRECTIVE.match(lines[i - 1]) if i > 0 else None
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        code = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(document, i + 1, fence.group(1), code, directive.group(1) if directive else ""))
        i = end + 1
    return found


# ---- skeletons for deliberately partial blocks -----------------------------------------------------

MY_MODEL_C = "static double my_model(const double *x, size_t n) {\n" \
             "    double s = 0.0;\n    for (size_t i = 0; i < n; ++i) s += x[i] * x[i];\n    return s;\n}\n"  # fmt: skip


def model_cpp(code: str) -> str:
    return "#include <cstddef>\nusing std::size_t;\n" + MY_MODEL_C + code


def c_main(code: str) -> str:
    includes = [line for line in code.splitlines() if line.startswith("#include")]
    body = [line for line in code.splitlines() if not line.startswith("#include")]
    return ("#include <stddef.h>\n#include <stdio.h>\n" + "\n".join(includes) + "\n" + MY_MODEL_C
            + "int main(void) {\n" + "\n".join("    " + line for line in body)
            + "\n    return rc == PYBRIDGE_CLOSED ? 0 : 1;\n}\n")  # fmt: skip


def cmake_project(code: str) -> str:
    return "cmake_minimum_required(VERSION 3.21)\nproject(mysim LANGUAGES C CXX)\nadd_executable(mysim mysim.cpp)\n" + code


def policies(code: str) -> str:
    return (
        "import gc, sys\nimport pybridge\n"
        'cmd = [sys.executable, "-c", "import pybridge; pybridge.serve(lambda x: float(x @ x), n_params=2)"]\n'
        + code
        + "gc.collect()  # the Simulators above were never bound: their finalizers close them\n"
    )


SKELETONS: Dict[str, Callable[[str], str]] = {
    "model-cpp": model_cpp,
    "c-main": c_main,
    "cmake-project": cmake_project,
    "policies": policies,
}

#: Projects a document builds, driven once from Python: executable -> (x, expected cost).
ROUND_TRIPS = {
    "README.md": {
        "cpp-sim/build/mysim": ([1.0, 2.0, 3.0], 14.0),
        "c-sim/mysim": ([1.0, 2.0, 3.0], 14.0),
        "f-sim/build/mysim": ([1.0, 2.0, 3.0], 14.0),
        "f-sim/mysim-make": ([1.0, 2.0, 3.0], 14.0),
    },
}


# ---- running -----------------------------------------------------------------------------------------


def environment() -> Dict[str, str]:
    """This interpreter's bin/ first on PATH, so that `python` and `pybridge` are the installed ones."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def run_shell(code: str, cwd: Path, where: str) -> str:
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=cwd, env=environment(),
                            capture_output=True, text=True, timeout=TIMEOUT)  # fmt: skip
    assert result.returncode == 0, f"{where} failed ({result.returncode}):\n{code}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def run_python(code: str, cwd: Path, where: str) -> str:
    script = cwd / f"block_{where.replace('/', '_').replace(':', '_')}.py"
    script.write_text(code)
    return run_shell(f"python {script.name}", cwd, where)


def skeleton_of(directive: str) -> Optional[Callable[[str], str]]:
    match = re.search(r"with skeleton (\S+)", directive)
    if match is None:
        return None
    assert match.group(1) in SKELETONS, f"unknown skeleton {match.group(1)!r}"
    return SKELETONS[match.group(1)]


def same_shape(shown: str, actual: str) -> Optional[str]:
    """None if both texts have the same lines with the same words, numbers aside; else the difference."""
    def word(w: str) -> str:
        core = w.strip("()[]{},;:'\"")
        return w.replace(core, "<number>") if re.fullmatch(r"[-+]?(\d[\d.]*|nan|inf)(e[-+]?\d+)?%?", core) else w

    def words(line: str) -> List[str]:
        return [word(w) for w in line.split()]

    shown_lines = [words(line) for line in shown.strip().splitlines()]
    actual_lines = [words(line) for line in actual.strip().splitlines()]
    if len(shown_lines) != len(actual_lines):
        return f"{len(shown_lines)} lines shown, {len(actual_lines)} printed"
    for number, (a, b) in enumerate(zip(shown_lines, actual_lines), 1):
        if a != b:
            return f"line {number}: shown {a}, printed {b}"
    return None


def execute(block: Block, sandbox: Path) -> None:
    directive = block.directive
    where = block.where()
    if directive.startswith("skip:"):
        assert directive[len("skip:"):].strip(), f"{where}: a skip needs its reason"
        return
    if directive.startswith("output of:"):
        command = directive[len("output of:"):].strip()
        difference = same_shape(block.code, run_shell(command, sandbox, where))
        assert difference is None, f"{where}: the output shown does not match `{command}`: {difference}"
        return
    if directive.startswith("install-then:"):
        command = directive[len("install-then:"):].strip()
        lines = [line for line in block.code.splitlines() if line.strip() and not line.startswith("#")]
        ci = (REPO / ".ci" / "run").read_text()
        for line in lines:
            assert line.endswith(command) or line in ci, f"{where}: `{line}` is neither `{command}` nor .ci/run's command"
        assert any(line in ci for line in lines), f"{where}: .ci/run does not run the README's test command"
        run_shell(command, sandbox, where)
        return
    wrap = skeleton_of(directive) or (lambda code: code)
    if directive.startswith("write "):
        path = sandbox / directive.split()[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(wrap(block.code))
        return
    assert directive == "" or directive.startswith("run"), f"{where}: unknown directive {directive!r}"
    match = re.match(r"run in (\S+)", directive)
    cwd = sandbox / match.group(1) if match else sandbox
    if block.language == "python":
        run_python(wrap(block.code), cwd, where)
    elif block.language in ("sh", "bash", "console"):
        run_shell(wrap(block.code), cwd, where)
    else:
        pytest.fail(f"{where}: a {block.language or 'plain'} block without a directive; mark how it is tested")


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_code_block_runs(document: str, tmp_path: Path) -> None:
    for tree in ("examples", "benchmarks"):
        shutil.copytree(REPO / tree, tmp_path / tree)
    blocks = [b for b in blocks_of(document) if b.language or b.directive]  # plain text blocks are diagrams
    for block in blocks:
        execute(block, tmp_path)
    for executable, (x, expected) in ROUND_TRIPS.get(document, {}).items():
        with pybridge.Simulator([tmp_path / executable]) as sim:
            assert sim(x) == expected, executable


def test_the_parser_sees_every_block() -> None:
    """A fence the parser missed would be a block nobody runs."""
    for document in DOCUMENTS:
        fences = sum(1 for line in (REPO / document).read_text().splitlines() if line.startswith("```"))
        assert fences == 2 * len(blocks_of(document)), document
