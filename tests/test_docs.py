"""The documentation runs: code blocks, relative links and docstring examples.

Every ```python block of ``docs/*.md`` and ``README.md`` is executed. The
blocks of one file share a namespace and run in order, like a notebook. A
block is skipped when its preceding non-blank line is the HTML comment
``<!-- skip-test -->``, a marker meant for blocks that need a data set or a GPU.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARKDOWN_FILES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]

SKIP_MARKER = "<!-- skip-test -->"
FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
# Inline links and images [text](target "title"), and reference definitions [label]: target.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
INLINE_CODE = re.compile(r"`[^`]*`")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")

DOCTEST_PACKAGES = (
    "mmbilevel.legendre",
    "mmbilevel.prox",
    "mmbilevel.majorants",
    "mmbilevel.mm",
    "mmbilevel.rootfind",
)
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True)
class CodeBlock:
    """A fenced code block of a markdown file."""

    language: str
    code: str
    line: int  # 1-based line number of the first line of code
    skip: bool


def extract_blocks(text: str) -> list[CodeBlock]:
    """Return the fenced code blocks of ``text`` in order, with their skip markers."""
    blocks = []
    lines = text.splitlines()
    index = 0
    last_text = ""
    while index < len(lines):
        match = FENCE.match(lines[index].strip())
        if match is None:
            if lines[index].strip():
                last_text = lines[index].strip()
            index += 1
            continue

        fence, language = match.group(1), match.group(2).lower()
        start = index + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        code = "\n".join(lines[start:end])
        blocks.append(CodeBlock(language, code, start + 1, last_text == SKIP_MARKER))
        last_text = ""
        index = end + 1
    return blocks


def python_blocks(path: Path) -> list[CodeBlock]:
    """Return the ```python blocks of the markdown file ``path``."""
    return [block for block in extract_blocks(path.read_text(encoding="utf-8")) if block.language in ("python", "py")]


def relative_links(text: str) -> list[tuple[int, str]]:
    """Return (line, target) for every relative link outside code, without its #fragment."""
    links = []
    in_fence = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line.strip())
        if match is not None:
            if in_fence is None:
                in_fence = match.group(1)
            elif line.strip().startswith(in_fence):
                in_fence = None
            continue
        if in_fence is not None:
            continue

        prose = INLINE_CODE.sub("", line)
        targets = INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)
        for target in targets:
            if EXTERNAL.match(target) or target.startswith("#"):
                continue
            path = target.split("#", 1)[0].split("?", 1)[0]
            if path:
                links.append((number, path))
    return links


def _file_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------- the parser


def test_extract_blocks_skip_marker():
    text = "intro\n\n<!-- skip-test -->\n```python\nraise SystemExit\n```\n\n```python\nx = 1\n```\n"
    blocks = extract_blocks(text)
    assert [block.skip for block in blocks] == [True, False]
    assert blocks[1].code == "x = 1"
    assert blocks[1].line == 9


def test_extract_blocks_languages():
    text = "```bash\nls\n```\n~~~py\ny = 2\n~~~\n````python\n```\n````\n"
    blocks = extract_blocks(text)
    assert [block.language for block in blocks] == ["bash", "py", "python"]
    assert blocks[2].code == "```"


def test_relative_links_ignore_code_and_urls():
    text = (
        "See [core](core.md#legendre) and ![plot](img/a.png).\n"
        "[web](https://example.org) [anchor](#top) `[not](a.md)`\n"
        "```\n[inside](b.md)\n```\n"
        "[ref]: architecture.md\n"
    )
    assert relative_links(text) == [(1, "core.md"), (1, "img/a.png"), (6, "architecture.md")]


# ----------------------------------------------------------------- the docs


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=_file_id)
def test_markdown_python_blocks_run(path, monkeypatch):
    if not path.exists():
        pytest.fail(f"{_file_id(path)} is missing")
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for block in python_blocks(path):
        if block.skip:
            continue
        # Leading newlines make traceback line numbers match the markdown file.
        source = "\n" * (block.line - 1) + block.code
        try:
            exec(compile(source, str(path), "exec"), namespace)
        except Exception as error:
            frames = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == str(path)]
            line = frames[-1].lineno if frames else block.line
            pytest.fail(
                f"{_file_id(path)}, line {line} (python block starting at line {block.line}) "
                f"raised {type(error).__name__}: {error}"
            )


@pytest.mark.parametrize("path", MARKDOWN_FILES, ids=_file_id)
def test_markdown_links_exist(path):
    missing = [
        f"line {line}: {target}"
        for line, target in relative_links(path.read_text(encoding="utf-8"))
        if not (path.parent / target).exists()
    ]
    assert not missing, f"{_file_id(path)} links to missing files: {missing}"


def test_core_page_has_examples():
    assert len(python_blocks(DOCS / "core.md")) >= 10


# --------------------------------------------------------- docstring examples


def _doctest_modules() -> list[str]:
    names = []
    for package_name in DOCTEST_PACKAGES:
        package = importlib.import_module(package_name)
        names.append(package_name)
        if hasattr(package, "__path__"):
            names.extend(info.name for info in pkgutil.iter_modules(package.__path__, f"{package_name}."))
    return names


@pytest.mark.parametrize("module_name", _doctest_modules())
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=DOCTEST_FLAGS, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples failed in {module_name}"


def test_docstring_examples_found():
    finder = doctest.DocTestFinder()
    examples = sum(
        len(test.examples)
        for name in _doctest_modules()
        for test in finder.find(importlib.import_module(name))
    )
    assert examples > 0
