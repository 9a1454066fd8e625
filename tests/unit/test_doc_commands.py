"""Every ``servesim`` command the docs show is one that works (issue 20, item 9).

Collects each ``servesim ...`` line (also ``.venv/bin/servesim`` and ``python -m sim``) from the
shell blocks of README.md and docs/**/*.md: continuation lines joined, a ``$ `` prompt, comments
and anything after a pipe dropped. For each one:

1. the real parser of ``sim/cli.py`` parses it (a flag that does not exist fails);
2. a scenario it names loads, with the command's ``--set``/``--seed``/``--replications`` applied;
3. it runs, in this process through ``sim.cli.main``, from the repository root, with every
   output (``-o``, and a default output folder) redirected into a temporary folder.

The Python blocks run too, in order within their page (a block may use what an earlier one
defined), from a temporary folder that sees the repository's ``scenarios/`` and the commands'
``results/``.

A file the docs ask the reader to write ("save this as `azure_replay.yaml`", the block after
that sentence) is written to a temporary folder first. A command or block that reads another's
output (``servesim report results/quickstart``) runs that one first. Commands that take long
(calibrate, validate, fidelity, plan, sweep, bench, price over several loads, and a few more
listed below, with what depends on them) run only with ``SERVESIM_DOC_SLOW=1``
(``make docs-check``); a CUDA command only where CUDA is. Steps 1 and 2 run for every command.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL = {"", "sh", "bash", "shell", "console"}
OUTPUT_FLAGS = ("-o", "--output", "--out", "--raw-dir")
SLOW_ENV = "SERVESIM_DOC_SLOW"
RUN_SLOW = os.environ.get(SLOW_ENV) == "1"

SLOW_COMMANDS = {"calibrate", "validate", "fidelity", "plan", "sweep", "bench"}
"""Sub-commands that take minutes (calibrate, validate), or up to tens of seconds on 2 cores."""
SLOW_FLAGS = {"--loads", "--steps"}
"""``servesim price`` re-run at several loads or step counts."""
SLOW_LINES = {
    "run scenarios/quickstart.yaml -o results/qs --set pools.chat.replicas=4 --replications 5",  # 4.5 s
    "run scenarios/faults_retry.yaml",  # 2.8 s, the simulation the tutorial's `-o results/faults` runs by default
    "run scenarios/quickstart.yaml --set pools.chat.engine.scheduler=static -o results/static",  # 4 s
    "run scenarios/autoscaling_diurnal.yaml",  # 45 s: a whole day of a ServeGen client, 1.07 M requests
    "run scenarios/moe_expert_parallel.yaml",  # 6 s
}
"""Other commands left to ``make docs-check`` (their arguments after ``servesim``, as written), so
that the default run stays within about a minute on 2 cores."""
SLOW_PYTHON = ("run_sweep(", "plan_fleet(")
"""A Python block that calls one of these is slow."""


# --------------------------------------------------------------------------- reading the docs


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    """Line of the opening fence, from 1."""
    lang: str
    text: str
    before: str
    """The paragraph just before the block (where "save this as `NAME`" is said)."""


def blocks(page: Path) -> list[Block]:
    out: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(`{3,})\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence.group(1))), len(lines))
        para: list[str] = []
        for prev in reversed(lines[:i]):
            if not prev.strip():
                if para:
                    break
                continue
            para.insert(0, prev)
        out.append(Block(page, i + 1, fence.group(2).lower(), "\n".join(lines[i + 1 : end]), " ".join(para)))
        i = end + 1
    return out


def saved_files(page: Path) -> dict[str, str]:
    """The files a page asks the reader to save: ``{name: content}``."""
    files = {}
    for b in blocks(page):
        m = re.search(r"[Ss]ave\b.*?\bas `([^`]+)`", b.before)
        if m:
            files[m.group(1)] = b.text + "\n"
    return files


@dataclass
class DocCommand:
    page: Path
    line: int
    text: str
    argv: list[str]
    outputs: list[str] = field(default_factory=list)
    """The output paths it writes, as written (``results/quickstart``)."""
    inputs: list[str] = field(default_factory=list)
    """Earlier outputs it reads (``results/quickstart`` for ``servesim report results/quickstart``)."""

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def slow(self) -> bool:
        return self.argv[0] in SLOW_COMMANDS or " ".join(self.argv) in SLOW_LINES or bool(SLOW_FLAGS & set(self.argv))


def command_argv(line: str) -> list[str] | None:
    """The arguments after ``servesim`` on a shell line, or None when it runs something else."""
    line = line.strip().removeprefix("$ ")
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    for stop in ("|", "&&", ";", ">", "2>"):
        if stop in words:
            words = words[: words.index(stop)]
    if words[:1] in (["servesim"], [".venv/bin/servesim"]):
        return words[1:]
    if len(words) > 3 and words[0] in ("python", "python3") and words[1:3] == ["-m", "sim"]:
        return words[3:]
    return None


def _outputs_and_inputs(argv: list[str]) -> tuple[list[str], list[str]]:
    outputs, inputs = [], []
    for i, word in enumerate(argv):
        if word in OUTPUT_FLAGS and i + 1 < len(argv):
            outputs.append(argv[i + 1].rstrip("/"))
        elif word.startswith("results/") and (i == 0 or argv[i - 1] not in OUTPUT_FLAGS):
            inputs.append(word.rstrip("/"))
    return outputs, inputs


def commands() -> list[DocCommand]:
    out = []
    for page in PAGES:
        for b in blocks(page):
            if b.lang not in SHELL:
                continue
            lines = b.text.splitlines()
            i = 0
            while i < len(lines):
                start, text = i, lines[i]
                while text.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
                argv = command_argv(text)
                if argv:
                    outputs, inputs = _outputs_and_inputs(argv)
                    out.append(DocCommand(page, b.line + 1 + start, " ".join(text.split()), argv, outputs, inputs))
    return out


@dataclass
class Snippet:
    page: Path
    line: int
    code: str
    index: int
    """Its place among its page's Python blocks, from 0."""

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def inputs(self) -> list[str]:
        return sorted(set(re.findall(r"results/[\w.-]+", self.code)))


def snippets() -> list[Snippet]:
    out = []
    for page in PAGES:
        code = [b for b in blocks(page) if b.lang == "python"]
        out += [Snippet(page, b.line, b.text, i) for i, b in enumerate(code)]
    return out


COMMANDS = commands()
SNIPPETS = snippets()


def producers(path: str, before: DocCommand | Snippet) -> list[DocCommand]:
    """The commands that write ``path``: those earlier on the same page, else the first anywhere."""
    writers = [c for c in COMMANDS if path in c.outputs]
    same = [c for c in writers if c.page == before.page and c.line < before.line]
    return same or writers[:1]


def is_slow(item: DocCommand | Snippet, seen: frozenset = frozenset()) -> bool:
    """Slow itself, or reads what a slow command writes."""
    if isinstance(item, DocCommand) and item.slow:
        return True
    if isinstance(item, Snippet) and any(name in item.code for name in SLOW_PYTHON):
        return True
    for path in item.inputs:
        for p in producers(path, item):
            if p.id not in seen and is_slow(p, seen | {item.id}):
                return True
    if isinstance(item, Snippet):  # and the blocks before it on its page
        return any(is_slow(s, seen | {item.id}) for s in SNIPPETS if s.page == item.page and s.index < item.index)
    return False


def needs_cuda(cmd: DocCommand) -> bool:
    return any(w.startswith("cuda") for w in cmd.argv)


def marks(item: DocCommand | Snippet) -> list:
    out = []
    if is_slow(item):
        out.append(pytest.mark.doc_slow)
        out.append(pytest.mark.skipif(not RUN_SLOW, reason=f"slow: runs with {SLOW_ENV}=1 (make docs-check)"))
    if isinstance(item, DocCommand) and needs_cuda(item):
        out.append(pytest.mark.skipif(not _cuda(), reason="needs a CUDA device"))
    return out


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# --------------------------------------------------------------------------- running them


@contextlib.contextmanager
def shipped_catalog():
    """Run with the shipped catalog alone, as a fresh ``servesim`` process does, and leave this
    process's catalog as it was: a page's ``catalog:`` block (``my-gpu``) must neither meet
    entries other tests added nor leave its own behind."""
    from sim import catalog

    tables = {"models": catalog.models(), "gpus": catalog.gpus(), "diffusion_models": catalog.diffusion_models()}
    before = {kind: dict(table) for kind, table in tables.items()}
    for kind, table in tables.items():
        table.clear()
        table.update(catalog.shipped(kind))
    try:
        yield
    finally:
        for kind, table in tables.items():
            table.clear()
            table.update(before[kind])


class Workspace:
    """Where the docs' commands write (``out``, a plain folder: nothing in it leads back into the
    repository), where the files they ask for are saved (``saved``), where the Python blocks run
    (``cwd``: ``scenarios`` there is the repository's, ``results`` the commands' outputs), which
    commands and blocks have run, and each page's Python namespace."""

    def __init__(self, root: Path):
        self.out, self.saved, self.cwd = root / "out", root / "saved", root / "cwd"
        (self.out / "results").mkdir(parents=True)
        self.cwd.mkdir()
        (self.cwd / "scenarios").symlink_to(ROOT / "scenarios", target_is_directory=True)
        (self.cwd / "results").symlink_to(self.out / "results", target_is_directory=True)
        self.ran: dict[str, int] = {}
        self.ran_argv: dict[tuple[str, ...], int] = {}
        self.namespaces: dict[Path, tuple[int, dict]] = {}

    def save(self, page: Path) -> Path:
        folder = self.saved / re.sub(r"\W", "_", str(page.relative_to(ROOT)))
        for name, text in saved_files(page).items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return folder

    def out_path(self, written: str) -> str:
        path = (self.out / written.removeprefix("~/").lstrip("/")).resolve()
        assert not path.is_relative_to(ROOT), f"an output of the docs' commands would land in the repository: {path}"
        return str(path)

    def argv(self, cmd: DocCommand) -> list[str]:
        """The command's arguments with outputs in ``out``, inputs from there, saved files from
        ``saved``; a command whose default output is a file in the repository gets one in ``out``."""
        from sim.cli import build_parser

        saved = saved_files(cmd.page)
        folder = self.save(cmd.page) if saved else None
        argv = []
        for i, word in enumerate(cmd.argv):
            if i and cmd.argv[i - 1] in OUTPUT_FLAGS:
                word = self.out_path(word)
            elif word.startswith("results/"):
                word = self.out_path(word)
            elif word in saved:
                word = str(folder / word)
            argv.append(word)
        if not any(w in OUTPUT_FLAGS for w in argv):
            try:
                args = build_parser().parse_args(argv)
            except SystemExit:  # it does not parse: the test that parses it says so
                return argv
            default = getattr(args, "output", None) or getattr(args, "out", None)
            if cmd.argv[:2] == ["profile", "show"]:  # its plot goes beside the profile by default
                default = Path(args.file).with_suffix(".png").name
            if default is not None and str(default) != "-":
                argv += [
                    "-o",
                    str(self.out / "defaults" / cmd.id.replace("/", "_").replace(":", "_") / Path(default).name),
                ]
        return argv

    def run(self, cmd: DocCommand, capsys) -> int:
        if cmd.id in self.ran:
            return self.ran[cmd.id]
        for path in cmd.inputs:
            for p in producers(path, cmd):
                assert self.run(p, capsys) == 0, f"{p.id} ({p.text}), which {cmd.id} reads, failed"
        from sim.cli import main

        argv = self.argv(cmd)
        same = self.ran_argv.get(tuple(argv))  # the same command on another page: run once
        if same is not None:
            self.ran[cmd.id] = same
            return same
        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            with shipped_catalog():
                code = main(argv)
        except SystemExit as exc:
            code = exc.code
        finally:
            os.chdir(cwd)
        capsys.readouterr()
        self.ran[cmd.id] = self.ran_argv[tuple(argv)] = code
        return code

    def exec(self, snippet: Snippet, capsys) -> None:
        done, namespace = self.namespaces.get(snippet.page, (-1, {"__name__": "__doc_snippet__"}))
        for path in snippet.inputs:
            for p in producers(path, snippet):
                assert self.run(p, capsys) == 0, f"{p.id} ({p.text}), which {snippet.id} reads, failed"
        page_snippets = [s for s in SNIPPETS if s.page == snippet.page]
        cwd = os.getcwd()
        os.chdir(self.cwd)
        try:
            for s in page_snippets[done + 1 : snippet.index + 1]:
                with shipped_catalog():
                    exec(compile(s.code, s.id, "exec"), namespace)  # noqa: S102 - the docs' own examples
                done = s.index
        finally:
            os.chdir(cwd)
            self.namespaces[snippet.page] = (done, namespace)
        capsys.readouterr()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("doc-commands"))


def _params(items: list, with_marks: bool) -> list:
    return [pytest.param(item, id=item.id, marks=marks(item) if with_marks else ()) for item in items]


# --------------------------------------------------------------------------- the tests


def test_the_docs_show_commands_and_python():
    """The collector finds what it should (a page renamed or a fence changed would hide them)."""
    pages = {c.page.relative_to(ROOT).as_posix() for c in COMMANDS}
    for page in ("README.md", "docs/tutorial.md", "docs/how-to/plan-a-fleet.md", "docs/how-to/sweep-a-grid.md"):
        assert page in pages, f"no servesim command found in {page}"
    assert len(COMMANDS) >= 40 and len(SNIPPETS) >= 8
    assert any(c.argv[:1] == ["sweep"] and "classes.chat.arrival.rate=10,20,40" in c.argv for c in COMMANDS), (
        "a command continued over lines (trailing backslash) was not joined"
    )
    assert saved_files(ROOT / "docs/tutorial.md").keys() == {"azure_replay.yaml"}


@pytest.mark.parametrize("cmd", _params(COMMANDS, with_marks=False))
def test_doc_command_parses_and_its_scenario_loads(cmd, workspace, capsys):
    from sim.cli import build_parser
    from sim.commands.args import scenario_overrides
    from sim.config import load_scenario

    argv = workspace.argv(cmd)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{cmd.id}: `servesim {' '.join(cmd.argv)}` does not parse: {capsys.readouterr().err.strip()}")
    if getattr(args, "scenario", None) is not None:
        with shipped_catalog():
            load_scenario(
                args.scenario if args.scenario.is_absolute() else ROOT / args.scenario, scenario_overrides(args)
            )


@pytest.mark.parametrize("cmd", _params(COMMANDS, with_marks=True))
def test_doc_command_runs(cmd, workspace, capsys):
    code = workspace.run(cmd, capsys)
    assert code == 0, f"{cmd.id}: `{cmd.text}` exited with {code}"


@pytest.mark.parametrize("snippet", _params(SNIPPETS, with_marks=True))
def test_doc_python_block_runs(snippet, workspace, capsys):
    workspace.exec(snippet, capsys)


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of a page (outside code blocks)."""
    from sim.docgen.reference import anchor

    text = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {anchor(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, flags=re.M)}


def test_every_relative_link_in_the_docs_resolves():
    """Moving a page must not leave a link behind: every relative link (and its #anchor) leads somewhere."""
    broken = []
    for page in PAGES:
        if "docs/validation/" in page.as_posix():  # committed reports, as their tools wrote them
            continue
        prose = re.sub(r"^\s*```.*?^\s*```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
