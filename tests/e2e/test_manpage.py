"""The manual page, man/jiffy.1, against what the binary says it accepts.

Every option word of `jiffy --help`, `jiffy history --help` and `jiffy report
--help` (in the option column and in running text: "also --cpus-per-proc",
"(-configfile is refused", "-ppn N, -launcher X, ..."), every subcommand of
--help's list and every environment variable it names must appear in the
rendered page; so must every option name of the parsers' tables
(src/cli/parse.cc, src/views/options.cc), aliases --help leaves out (-wd,
-V, --nooversubscribe...) included. The page must render without groff
warnings, and option hyphens in its source must be escaped (\\-).

Needs groff (Debian: groff-base, which man-db depends on); skips without it.
"""

import os
import re
import shutil
import subprocess

import pytest

from conftest import SANITIZED, REPO

PAGE = REPO / "man" / "jiffy.1"
GROFF = shutil.which("groff")
# Text files, not the binaries: the sanitizer run (scripts/sanitize.sh) has
# nothing to add here.
pytestmark = [pytest.mark.skipif(GROFF is None, reason="groff is not installed (Debian: apt install groff-base)"),
              pytest.mark.skipif(SANITIZED, reason="checks the manual page, not the binaries")]

# An option word: one or two dashes and a letter, not inside another word
# ("Ctrl-C", "jiffy-launch", "2026-12-04" and "0..N-1" are none; a lone "--"
# is none either).
OPTION_WORD = re.compile(r"(?<![\w-])(--?[A-Za-z][A-Za-z0-9-]*)")
# Variables users set or read: jiffy's own and hydra's.
ENV_VAR = re.compile(r"\b((?:JIFFY|MPIEXEC)_[A-Z0-9_]*[A-Z0-9])\b")
# Hyphens groff may print for "-" and "\-" (hyphen, non-breaking hyphen,
# figure dash, en dash, minus sign).
DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2212": "-"})


def render(path=PAGE) -> str:
    """The page as plain text: no colours, bold or underlining, lines long
    enough and hyphenation off, so that no option word is split."""
    cp = subprocess.run([GROFF, "-man", "-Tutf8", "-P-cbou", "-rLL=250n", "-rHY=0", str(path)],
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, cp.stderr.decode(errors="replace")
    return cp.stdout.decode("utf-8").translate(DASHES)


def mentions(text: str, word: str) -> bool:
    """Whether `word` stands in text as a word of its own: "-wd" is not
    found in "-wdir", nor "-timeout" in "--timeout"."""
    return re.search(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text) is not None


def option_words(text: str) -> set:
    return {w.rstrip("-") for w in OPTION_WORD.findall(text)}


def section(text: str, title: str) -> str:
    """The lines of --help after the line starting with title, up to the next
    empty line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    body = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        body.append(line)
    assert body, f"--help has no lines under {title!r}"
    return "\n".join(body)


def missing(words, text) -> list:
    return sorted(w for w in words if not mentions(text, w))


@pytest.fixture(scope="module")
def helps(jiffy_bin) -> dict:
    """{"": jiffy --help, "history": ..., "report": ...}"""
    out = {}
    for sub in ("", "history", "report"):
        argv = [jiffy_bin] + ([sub] if sub else []) + ["--help"]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert cp.returncode == 0 and cp.stdout.startswith("Usage: jiffy"), (argv, cp.stdout, cp.stderr)
        out[sub] = cp.stdout
    return out


@pytest.fixture(scope="module")
def page() -> str:
    assert PAGE.is_file(), f"{PAGE} is missing"
    return render()


def test_help_option_words_are_found(helps):
    """The extraction itself: sure cases from the option column and from
    running text, and none of the false words."""
    words = option_words(helps[""])
    for w in ("-n", "-np", "--np", "-c", "--cpus-per-task", "--cpus-per-proc", "-bind-to", "--no-topology-cache",
              "-configfile", "-ppn", "-launcher", "--allow-run-as-root", "-H", "-machinefile", "--timeout", "-wd",
              "--iterations", "--last-run", "-o"):
        assert w in words, (w, sorted(words))
    assert not {w for w in words if w in ("-", "--") or re.fullmatch(r"-+\d.*", w)}, sorted(words)
    assert {"--since", "--db", "--slowest"} <= option_words(helps["history"])
    assert {"-o", "--last-run", "--db"} <= option_words(helps["report"])


@pytest.mark.parametrize("sub", ["", "history", "report"])
def test_every_help_option_is_in_the_page(helps, page, sub):
    words = option_words(helps[sub])
    gone = missing(words, page)
    assert not gone, (f"man/jiffy.1 does not mention these options of `jiffy {sub + ' ' if sub else ''}--help`: "
                      + ", ".join(gone))


def test_every_subcommand_is_in_the_page(helps, page):
    listed = section(helps[""], "Subcommands")
    subs = {m.group(1) for m in re.finditer(r"^  ([a-z]+)\b", listed, re.M)}
    assert {"daemon", "status", "top", "stop", "history", "report"} <= subs, listed
    part = page[page.index("\nSUBCOMMANDS\n"):page.index("\nEXIT STATUS\n")]
    gone = sorted(s for s in subs if not re.search(rf"^ {{1,4}}jiffy {s}\b", part, re.M))
    assert not gone, "man/jiffy.1 has no SUBCOMMANDS heading ('jiffy NAME ...') for: " + ", ".join(gone)


def test_every_environment_variable_is_in_the_page(helps, page):
    listed = section(helps[""], "Environment variables")
    names = {m.group(1) for m in re.finditer(r"^  ([A-Z][A-Z0-9_]*)", listed, re.M)}
    assert {"MPIEXEC_TIMEOUT", "JIFFY_RUNTIME_DIR", "JIFFY_BACKEND"} <= names, listed
    # And every one named anywhere in the help texts (JIFFY_HISTORY_KEEP_DAYS...).
    for text in helps.values():
        names |= set(ENV_VAR.findall(text))
    gone = missing(names, page)
    assert not gone, "man/jiffy.1 does not mention these environment variables of --help: " + ", ".join(gone)
    env = page[page.index("\nENVIRONMENT\n"):page.index("\nFILES\n")]
    gone = missing(names, env)
    assert not gone, "man/jiffy.1's ENVIRONMENT section leaves out: " + ", ".join(gone)


def parser_option_names(path, table):
    """The names of one option table of a parser: `{"name", handler...}`."""
    text = (REPO / path).read_text()
    m = re.search(re.escape(table) + r"\[\] = \{(.*?)\n\};", text, re.S)
    assert m, f"no table {table} in {path}"
    names = re.findall(r'^\s*\{"([^"]+)",', m.group(1), re.M)
    assert names, f"no options in {table} of {path}"
    return names


@pytest.mark.parametrize("path,table", [
    ("src/cli/parse.cc", "kLaunchOptions"),
    ("src/cli/parse.cc", "kDaemonOptions"),
    ("src/cli/parse.cc", "kStatusOptions"),
    ("src/cli/parse.cc", "kTopOptions"),
    ("src/views/options.cc", "kHistoryOptions"),
    ("src/views/options.cc", "kReportOptions"),
])
def test_every_parser_option_is_in_the_page(page, path, table):
    """Names take one dash or two: either spelling in the page will do."""
    gone = sorted(n for n in parser_option_names(path, table)
                  if not (mentions(page, "-" + n) or mentions(page, "--" + n)))
    assert not gone, f"man/jiffy.1 does not mention these options of {table} ({path}): " + ", ".join(gone)


def test_help_and_version_spellings_are_in_the_page(page):
    # src/cli/parse.cc answer_at_once: -h/--help, -V/--version (any dashes).
    gone = missing(["-h", "--help", "-V", "--version"], page)
    assert not gone, "man/jiffy.1 does not mention: " + ", ".join(gone)


def test_page_renders_without_warnings():
    cp = subprocess.run([GROFF, "-man", "-ww", "-z", "-Tutf8", str(PAGE)], capture_output=True, text=True,
                        timeout=60)
    assert cp.returncode == 0 and cp.stdout == "" and cp.stderr == "", cp.stderr


def test_page_has_its_sections_and_no_stray_escapes(page):
    for title in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS", "EXIT STATUS", "ENVIRONMENT",
                  "FILES", "EXAMPLES", "SEE ALSO"):
        assert re.search(rf"^{title}$", page, re.M), f"man/jiffy.1 has no {title} section"
    # An escape groff did not know, or a request it printed as text.
    assert "\\" not in page, [line for line in page.splitlines() if "\\" in line]
    assert not re.search(r"^\s*\.[A-Za-z]{1,2}\b", page, re.M), \
        [line for line in page.splitlines() if re.match(r"^\s*\.[A-Za-z]{1,2}\b", line)]


def test_option_hyphens_are_escaped():
    """An unescaped "-" before an option name is a hyphen to groff, which
    may print it as U+2010 and break lines after it."""
    bad = []
    for n, line in enumerate(PAGE.read_text().splitlines(), 1):
        if line.startswith('.\\"'):
            continue
        if re.search(r"(?<![\\\w-])--?[A-Za-z]", line):
            bad.append(f"{n}: {line}")
    assert not bad, "unescaped option dashes (write \\-):\n" + "\n".join(bad)


def test_a_missing_option_is_named(tmp_path, helps):
    """The check fails, naming the option, for a page that lost one."""
    source = PAGE.read_text()
    assert "\\-\\-no\\-ucx\\-shm" in source
    copy = tmp_path / "jiffy.1"
    copy.write_text(source.replace("\\-\\-no\\-ucx\\-shm", "\\-\\-no\\-ucx"))
    words = option_words(helps[""])
    gone = set(missing(words, render(copy))) - set(missing(words, render()))
    assert gone == {"--no-ucx-shm"}, gone
