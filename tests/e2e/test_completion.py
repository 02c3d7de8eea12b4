"""bash completion (completion/jiffy), driven through bash itself.

Each case runs `bash --norc --noprofile -c`, which sources Debian's
bash-completion (/usr/share/bash-completion/bash_completion; the cases run
once with it and once without, where the script falls back on plain
compgen), then completion/jiffy; it sets COMP_WORDS, COMP_CWORD, COMP_LINE
and COMP_POINT as bash would for the line (split at blanks and at
COMP_WORDBREAKS characters: "--mpi=p" is "--mpi" "=" "p"), calls the function
`complete -p jiffy` names and prints COMPREPLY. A few cases type into an
interactive bash on a pseudo-terminal instead, <TAB> and all, to check that
the emulation is what bash does.

The option tables are checked against their sources, so that completion
cannot drift: the option names and which take values and how many
(src/cli/parse.cc, src/views/options.cc), the options allowed after ':'
(Scope::kGroup), the subcommands, and every option word of `jiffy --help`,
`jiffy history --help` and `jiffy report --help` (those read from the
binary; the rest needs no binary).

Needs bash; the bash-completion cases skip without the package (Debian:
apt install bash-completion).
"""

import os
import pty
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SANITIZED, REPO

SCRIPT = REPO / "completion" / "jiffy"
BASH = shutil.which("bash")
BASH_COMPLETION = Path("/usr/share/bash-completion/bash_completion")
# bash's default COMP_WORDBREAKS, less the blanks.
WORDBREAKS = "\"'><=;|&(:"
# Options the daemon passes to itself: not offered.
INTERNAL = {"detached-child"}

# Text files, not the binaries: the sanitizer run (scripts/sanitize.sh) has
# nothing to add here.
pytestmark = [pytest.mark.skipif(BASH is None, reason="bash is not installed"),
              pytest.mark.skipif(SANITIZED, reason="checks the completion script, not the binaries")]

MODES = [
    "plain",
    pytest.param("bash-completion", marks=pytest.mark.skipif(
        not BASH_COMPLETION.is_file(), reason="bash-completion is not installed (Debian: apt install bash-completion)")),
]

# Sources what the mode says, stands in for compopt (which works only while
# bash is completing) and completes one line per input record (COMP_LINE,
# then the words, separated by US characters, ended by one): prints "R reply"
# for each of COMPREPLY, "O options" for each compopt call, then "E". Each
# line is completed in a subshell, so that none sees what another loaded.
DRIVER = r'''
if [[ $JIFFY_COMP_MODE == bash-completion ]]; then
    . /usr/share/bash-completion/bash_completion || exit 97
fi
. "$JIFFY_COMP_SCRIPT" || exit 98
compopt() { local IFS=' '; printf 'O %s\n' "$*"; }
spec=$(complete -p jiffy) || exit 99
func=${spec##*-F }
func=${func%% *}
while IFS=$'\x1f' read -r -d $'\n' -a f; do
    (
        COMP_LINE=${f[0]}
        COMP_POINT=${#COMP_LINE}
        COMP_WORDS=("${f[@]:1:${#f[@]}-1}")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMPREPLY=()
        "$func" jiffy "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        for r in "${COMPREPLY[@]}"; do printf 'R %s\n' "$r"; done
    )
    printf 'E\n'
done
'''


def comp_words(line: str) -> list:
    """The words bash hands a completion function for `line`, the cursor at
    its end: split at blanks, each run of COMP_WORDBREAKS characters a word
    of its own, and an empty last word after a blank."""
    assert not set("\"'\\") & set(line), "quoting is not emulated"
    words, word, breaks = [], "", False
    for ch in line:
        if ch.isspace() or (word and (ch in WORDBREAKS) != breaks):
            if word:
                words.append(word)
            word = ""
        if not ch.isspace():
            breaks = ch in WORDBREAKS
            word += ch
    words.append(word)  # "" after a blank: a new word
    return words


def test_words_are_split_as_bash_splits_them():
    assert comp_words("jiffy --mpi=p") == ["jiffy", "--mpi", "=", "p"]
    assert comp_words("jiffy --mpi=") == ["jiffy", "--mpi", "="]
    assert comp_words("jiffy -bind-to core:") == ["jiffy", "-bind-to", "core", ":"]
    assert comp_words("jiffy a : b") == ["jiffy", "a", ":", "b"]
    assert comp_words("jiffy -n 4 ") == ["jiffy", "-n", "4", ""]


class Completion:
    """Completes lines in a directory holding an executable a.out, a file
    src.c and a directory sub, with a small known environment: PATH is one
    directory with one command, jiffy-comp-cmd (scanning the system's for
    each line would take most of the time), and bash's builtins (true...)
    are commands too."""

    def __init__(self, mode: str, cwd: Path):
        self.mode, self.cwd = mode, cwd
        for exe in (cwd / "a.out", cwd / "bin" / "jiffy-comp-cmd"):
            exe.parent.mkdir(exist_ok=True)
            exe.write_text("#!/bin/sh\n")
            exe.chmod(0o755)
        (cwd / "src.c").write_text("")
        (cwd / "sub").mkdir()
        self.env = {"PATH": str(cwd / "bin"), "HOME": str(cwd), "LC_ALL": "C",
                    "JIFFY_COMPLETION_VAR": "1", "JIFFY_COMP_MODE": mode, "JIFFY_COMP_SCRIPT": str(SCRIPT)}

    def run_many(self, lines) -> list:
        """[(COMPREPLY, [compopt arguments])] of each line, in one bash."""
        records = "".join("\x1f".join([line, *comp_words(line)]) + "\x1f\n" for line in lines)
        cp = subprocess.run([BASH, "--norc", "--noprofile", "-c", DRIVER], input=records, cwd=self.cwd,
                            env=self.env, capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, (lines, cp.returncode, cp.stdout, cp.stderr)
        assert cp.stderr == "", (lines, cp.stderr)
        results, replies, opts = [], [], []
        for out in cp.stdout.splitlines():
            if out == "E":
                results.append((replies, opts))
                replies, opts = [], []
            elif out.startswith("R "):
                replies.append(out[2:])
            else:
                assert out.startswith("O "), out
                opts.append(out[2:])
        assert len(results) == len(lines), (lines, cp.stdout)
        return results

    def run(self, line: str):
        """(COMPREPLY, [compopt arguments])"""
        return self.run_many([line])[0]

    def many(self, lines) -> dict:
        """{line: COMPREPLY}"""
        lines = list(lines)
        return {line: result[0] for line, result in zip(lines, self.run_many(lines))}

    def __call__(self, line: str) -> list:
        return self.run(line)[0]

    def set(self, line: str) -> set:
        return set(self(line))


@pytest.fixture(params=MODES)
def comp(request, tmp_path) -> Completion:
    return Completion(request.param, tmp_path)


def test_script_is_registered_for_jiffy_only():
    cp = subprocess.run([BASH, "--norc", "--noprofile", "-c", '. "$0" && complete -p', str(SCRIPT)],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "complete -F _jiffy jiffy"


# ---------------------------------------------------------------- subcommands


def test_subcommands(comp):
    assert comp.set("jiffy st") == {"status", "stop"}
    assert comp.set("jiffy h") == {"history"}
    assert comp.set("jiffy ") == set(parser_subcommands())


def test_first_word_that_is_no_subcommand_is_the_program(comp):
    assert "true" in comp("jiffy tru")
    assert comp.set("jiffy ./a") == {"./a.out"}


def test_status(comp):
    assert comp.set("jiffy status -") == {"--json"}
    assert comp.set("jiffy status --j") == {"--json"}
    assert comp("jiffy status --json ") == []


def test_top(comp):
    assert comp.set("jiffy top -") == {"-d", "--delay", "--interval", "-n", "--iterations", "-b", "--batch"}
    assert comp.set("jiffy top --it") == {"--iterations"}
    assert comp("jiffy top -n ") == []
    assert comp("jiffy top -d 1 -") != []


def test_stop_has_no_options(comp):
    assert comp("jiffy stop -") == []
    assert comp("jiffy stop --") == []


def test_daemon(comp):
    offered = comp.set("jiffy daemon --")
    assert {"--cores", "--gpus", "--gpu-names", "--hyperthreads", "--foreground", "--history",
            "--history-keep-days", "--backfill"} <= offered
    assert "--detached-child" not in offered
    assert comp.set("jiffy daemon --history=") == {"on", "off"}
    assert comp.set("jiffy daemon --backfill o") == {"on", "off"}
    assert comp("jiffy daemon --cores ") == []


def test_history_and_report(comp):
    assert comp.set("jiffy history --s") == {"--since", "--slowest"}
    assert comp.set("jiffy history --l") == {"--label", "--limit"}
    assert comp("jiffy history --since ") == []
    assert comp.set("jiffy history --cwd /us") == {"/usr"}
    assert comp.set("jiffy history --db sr") == {"src.c"}
    assert comp.set("jiffy report -") == {"--since", "--until", "--last-run", "-o", "--db", "--help"}
    assert comp.set("jiffy report --l") == {"--last-run"}


# ---------------------------------------------------------------- launch options


def test_option_names(comp):
    assert comp.set("jiffy --tag") == {"--tag-output"}
    assert comp.set("jiffy -tag") == {"-tag-output"}
    assert comp.set("jiffy --tim") == {"--timeout", "--timestamp-output"}
    assert comp.set("jiffy -timeo") == {"-timeout"}
    assert {"-n", "-np", "-bind-to", "--mpi", "--tag-output", "-genv", "-wdir", "--help"} <= comp.set("jiffy -")
    assert comp.set("jiffy -n 2 --ov") == {"--oversubscribe"}


def test_values(comp):
    assert comp.set("jiffy -bind-to ") == {"none", "core", "hwthread", "socket", "numa", "package", "board",
                                           "l1cache", "l2cache", "l3cache"}
    assert comp.set("jiffy -bind-to h") == {"hwthread"}
    assert comp.set("jiffy --mpi ") == {"auto", "pmi1", "pmix", "none"}
    assert comp.set("jiffy --mpi p") == {"pmi1", "pmix"}
    assert comp.set("jiffy --backend ") == {"local", "slurm", "auto"}
    assert comp.set("jiffy -map-by ") >= {"slot", "core", "hwthread", "node", "socket", "numa", "package", "board",
                                          "l3cache"}
    assert comp.set("jiffy --rank-by n") == {"node", "numa"}


def test_values_after_equals(comp):
    """bash replaces only the text after the last '=' or ':' of the word:
    the replies leave out what comes before."""
    assert comp.set("jiffy --mpi=p") == {"pmi1", "pmix"}
    assert comp.set("jiffy --mpi=") == {"auto", "pmi1", "pmix", "none"}
    assert comp.set("jiffy -mpi=pmix") == {"pmix"}
    assert comp.set("jiffy --backend=s") == {"slurm"}
    assert comp.set("jiffy -bind-to=co") == {"core"}
    assert comp.set("jiffy --wdir=/us") == {"/usr"}
    assert "true" in comp("jiffy --mpi=pmix -n=2 tru"), "attached values take no word of their own"


def test_values_after_colons(comp):
    assert comp.set("jiffy -bind-to core:") == {"1", "overload-allowed", "if-supported"}
    assert comp.set("jiffy -bind-to core:o") == {"overload-allowed"}
    assert comp.set("jiffy -map-by ppr:2:c") == {"core"}
    assert comp.set("jiffy -map-by core:n") == {"nooversubscribe", "nolocal"}
    assert comp.set("jiffy --map-by=slot:P") == {"PE="}


def test_numbers_offer_nothing(comp):
    replies = comp.many(["jiffy -n ", "jiffy -np ", "jiffy -c ", "jiffy --cpus-per-task ", "jiffy -g ", "jiffy -G ",
                         "jiffy -timeout ", "jiffy --timeout=", "jiffy -N ", "jiffy -ppn "])
    assert all(r == [] for r in replies.values()), replies


def test_directories_and_files(comp):
    assert comp.set("jiffy -wdir /us") == {"/usr"}
    assert comp.set("jiffy -wd s") == {"sub"}
    assert comp.set("jiffy --output-filename s") == {"sub"}
    assert comp.set("jiffy -f ") == {"a.out", "bin", "src.c", "sub"}
    assert comp.set("jiffy --hostfile sr") == {"src.c"}


def test_environment_values(comp):
    assert comp.set("jiffy -genv JIFFY_COMPLETION_") == {"JIFFY_COMPLETION_VAR"}
    assert comp.set("jiffy -x JIFFY_COMPLETION_") == {"JIFFY_COMPLETION_VAR"}
    assert comp.set("jiffy -genvlist PATH,JIFFY_COMPLETION_") == {"PATH,JIFFY_COMPLETION_VAR"}
    assert comp("jiffy -genv NAME ") == [], "-genv NAME VALUE: the value is free"


def test_words_an_option_takes(comp):
    """The program comes after the option's values, as parse.cc counts them."""
    assert "true" in comp("jiffy -n 4 tru")
    assert "true" not in comp("jiffy -n tru")
    assert "true" in comp("jiffy -genv NAME=VALUE tru")
    assert "true" in comp("jiffy -genv NAME VALUE tru")
    assert "true" not in comp("jiffy -genv NAME tru")
    assert "true" in comp("jiffy --genv=NAME=VALUE tru")
    assert "true" in comp("jiffy --genv=NAME VALUE tru")
    assert "true" in comp("jiffy --mca btl self tru")
    assert "true" not in comp("jiffy --mca btl tru")
    assert "true" in comp("jiffy --mca=btl self tru")
    assert "true" in comp("jiffy -l --tag-output -q tru")


# ---------------------------------------------------------------- the program and its arguments


def test_program(comp):
    assert "true" in comp("jiffy -n 4 tru")
    assert comp.set("jiffy -n 4 jiffy-comp") == {"jiffy-comp-cmd"}, "commands on PATH"
    assert comp.set("jiffy -n 4 ./a") == {"./a.out"}, "executables and directories, not src.c"
    assert {"sub", "source", "suspend"} <= comp.set("jiffy -n 4 s"), "directories, builtins"
    assert "true" in comp("jiffy -n 1 -- tru")
    replies, opts = comp.run("jiffy -n 4 tru")
    assert any("filenames" in o for o in opts), opts


def test_program_arguments_are_the_programs(comp):
    assert comp("jiffy -n 4 ./prog --") == []
    assert comp("jiffy -n 4 ./prog -n 2 --ti") == []
    assert comp("jiffy -n 4 ./prog -") == []
    assert comp.set("jiffy -n 4 ./prog sr") == {"src.c"}
    assert comp.set("jiffy -n 4 ./prog -bind-to ") == {"a.out", "bin", "src.c", "sub"}


def test_mpmd_groups(comp):
    """After ':' options complete again, those allowed in a group only."""
    assert comp("jiffy -n 1 prog : --ti") == [], "--timeout is for the whole job: before the first ':'"
    assert comp.set("jiffy -n 1 prog : -e") == {"-env", "-envlist", "-envall", "-envnone"}
    group = comp.set("jiffy -n 1 prog a b : -")
    assert {"-n", "-np", "-env", "-x", "--mca", "-wdir", "-host"} <= group
    assert not {"-genv", "-timeout", "--timeout", "-bind-to", "--mpi", "-c"} & group
    assert "true" in comp("jiffy -n 1 prog : -n 2 tru")
    assert comp.set("jiffy -n 1 prog : -wdir /us") == {"/usr"}
    assert comp.set("jiffy -n 1 prog : -n 2 ./prog2 sr") == {"src.c"}
    assert comp.set("jiffy -n 1 prog : -n 2 ./prog2 x : -en") == {"-env", "-envlist", "-envall", "-envnone"}


# ---------------------------------------------------------------- against the sources


def parser_table(path: str, table: str) -> list:
    """[(name, handler source, global?)] of one option table: each entry's
    handler is a lambda, or a function defined in the same file."""
    text = (REPO / path).read_text()
    m = re.search(re.escape(table) + r"\[\] = \{(.*?)\n\};", text, re.S)
    assert m, f"no table {table} in {path}"
    entries = re.split(r'\n(?=\s*\{")', m.group(1))
    out = []
    for entry in entries:
        e = re.match(r'\s*\{"([^"]+)",\s*(\w+)?', entry)
        if not e:
            continue
        name, func = e.groups()
        source = entry
        if func:
            d = re.search(r"\n\w[\w:<>&* ]*\b" + func + r"\([^)]*\)\s*\{", text)
            assert d, f"no definition of {func} ({table} {name}) in {path}"
            depth, i = 0, d.end() - 1
            while True:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
                if depth == 0:
                    break
            source = text[d.start():i]
        out.append((name, source, "Scope::kGlobal" in entry))
    assert out, f"no options in {table} of {path}"
    return out


# What reads an option's value: Args (parse.cc) and Words (views/options.cc).
VALUE_READ = re.compile(r"\b(?:args|w)\.(?:value|positive|non_negative|seconds|list|nonempty|time)\("
                        r"|\bnon_empty_value\(|\bread_env_list\(")


def arity(source: str):
    """How many words the option takes: 0, 1, 2, or "pair" (NAME VALUE or
    one NAME=VALUE word)."""
    if re.search(r"\bread_env_pair\(", source):
        return "pair"
    return len(VALUE_READ.findall(source))


TABLES = {
    "launch": ("src/cli/parse.cc", "kLaunchOptions"),
    "daemon": ("src/cli/parse.cc", "kDaemonOptions"),
    "status": ("src/cli/parse.cc", "kStatusOptions"),
    "top": ("src/cli/parse.cc", "kTopOptions"),
    "history": ("src/views/options.cc", "kHistoryOptions"),
    "report": ("src/views/options.cc", "kReportOptions"),
}


def options_of(context: str) -> list:
    return [o for o in parser_table(*TABLES[context]) if o[0] not in INTERNAL]


def spelled(name: str) -> str:
    return ("-" if len(name) == 1 else "--") + name


def prefix(context: str) -> str:
    return "jiffy " if context == "launch" else f"jiffy {context} "


def parser_subcommands() -> list:
    text = (REPO / "src/cli/parse.cc").read_text()
    body = text[text.index("Command parse_command_line("):]
    subs = re.findall(r'argv\[1\] == "([a-z-]+)"', body)
    assert {"daemon", "status", "top", "stop", "history", "report"} <= set(subs), subs
    return subs


def test_source_tables_are_read():
    launch = {name: (arity(source), is_global) for name, source, is_global in options_of("launch")}
    assert launch["n"] == (1, False) and launch["wdir"] == (1, False) and launch["timeout"] == (1, True)
    assert launch["genv"] == ("pair", True) and launch["env"] == ("pair", False)
    assert launch["mca"] == (2, False) and launch["tag-output"] == (0, True)
    assert launch["bind-to"] == (1, True) and launch["oversubscribe"] == (0, True)
    daemon = {name: arity(source) for name, source, _ in options_of("daemon")}
    assert daemon["history-keep-jobs"] == 1 and daemon["foreground"] == 0 and daemon["idle-timeout"] == 1
    assert {name: arity(source) for name, source, _ in options_of("top")} == {
        "d": 1, "delay": 1, "interval": 1, "n": 1, "iterations": 1, "b": 0, "batch": 0}
    history = {name: arity(source) for name, source, _ in options_of("history")}
    assert history["since"] == 1 and history["failed"] == 0 and history["db"] == 1


@pytest.mark.parametrize("context", list(TABLES))
def test_every_option_of_the_parser_is_offered(comp, context):
    names = [name for name, _, _ in options_of(context)]
    for dashes in ("-", "--"):
        offered = comp.set(prefix(context) + dashes)
        expected = {dashes + n for n in names if dashes == "-" or len(n) > 1}
        if dashes == "-":
            # A lone '-' offers the spellings of --help; each name in some spelling.
            assert all("-" + n in offered or "--" + n in offered for n in names), (context, sorted(offered))
            continue
        extra = {"--help", "--version"} if context == "launch" else {"--help"} if context in ("history", "report") \
            else set()
        assert offered == expected | extra, (context, sorted(offered ^ (expected | extra)))
    # Every name with one dash, as the parser takes it too.
    replies = comp.many(prefix(context) + "-" + name for name in names)
    assert all(line.split()[-1] in r for line, r in replies.items()), replies


def test_no_option_is_offered_the_parser_does_not_take(comp):
    known = {n for n, _, _ in options_of("launch")} | {"h", "help", "V", "version"}
    for line in ("jiffy -", "jiffy --", "jiffy -n 1 prog : -", "jiffy -n 1 prog : --"):
        stray = {r for r in comp(line) if r.lstrip("-") not in known}
        assert not stray, (line, stray)


def test_words_each_launch_option_takes(comp):
    """Per parse.cc: after a flag the next word is the program, after an
    option with a value the word after the value."""
    expect = {}
    for name, source, _ in options_of("launch"):
        opt, n = spelled(name), arity(source)
        if n == 0:
            lines_true = [f"jiffy {opt} tru"]
            lines_not = []
        elif n == 1:
            lines_true = [f"jiffy {opt} v tru", f"jiffy {opt}=v tru"]
            lines_not = [f"jiffy {opt} tru"]
        elif n == 2:
            lines_true = [f"jiffy {opt} k v tru", f"jiffy {opt}=k v tru"]
            lines_not = [f"jiffy {opt} tru", f"jiffy {opt} k tru"]
        else:
            assert n == "pair"
            lines_true = [f"jiffy {opt} A=1 tru", f"jiffy {opt} A 1 tru", f"jiffy {opt}=A=1 tru"]
            lines_not = [f"jiffy {opt} tru", f"jiffy {opt} A tru"]
        expect.update({line: True for line in lines_true})
        expect.update({line: False for line in lines_not})
    replies = comp.many(expect)
    wrong = sorted(line for line, r in replies.items() if ("true" in r) != expect[line])
    assert not wrong, "the program is not where parse.cc finds it: " + ", ".join(wrong)


@pytest.mark.parametrize("context", ["daemon", "status", "top", "history", "report"])
def test_words_each_subcommand_option_takes(comp, context):
    """A flag is followed by another option, a value by nothing offered."""
    options = options_of(context)
    assert all(arity(source) in (0, 1) for _, source, _ in options)
    replies = comp.many(prefix(context) + spelled(name) + " -" for name, _, _ in options)
    for (name, source, _), (line, r) in zip(options, replies.items()):
        assert (r != []) == (arity(source) == 0), (line, r)


def test_group_options_follow_scope(comp):
    offered = comp.set("jiffy -n 1 prog : -") | comp.set("jiffy -n 1 prog : --")
    for name, _, is_global in options_of("launch"):
        present = "-" + name in offered or "--" + name in offered
        assert present != is_global, (name, "global" if is_global else "group")


# ---------------------------------------------------------------- against --help

OPTION_WORD = re.compile(r"(?<![\w-])(--?[A-Za-z][A-Za-z0-9-]*)")
# srun's options, which --help names as what jiffy's become under Slurm.
SRUN_WORDS = {"--ntasks-per-node", "--nodelist", "--nodefile", "--exact"}


def help_text(jiffy_bin, *sub) -> str:
    cp = subprocess.run([jiffy_bin, *sub, "--help"], capture_output=True, text=True, timeout=30,
                        stdin=subprocess.DEVNULL)
    assert cp.returncode == 0 and cp.stdout.startswith("Usage: jiffy"), (sub, cp.stdout, cp.stderr)
    return cp.stdout


def between(text: str, start: str, end: str) -> str:
    return text[text.index("\n" + start):text.index("\n" + end)]


def help_words(jiffy_bin) -> dict:
    """{context: option words of its part of the help texts}"""
    main = help_text(jiffy_bin)
    words = lambda text: {w.rstrip("-") for w in OPTION_WORD.findall(text)}  # noqa: E731
    return {
        "launch": words(between(main, "Placement", "Daemon options:")) - SRUN_WORDS,
        "daemon": words(between(main, "Daemon options:", "Top options")),
        "top": words(between(main, "Top options", "Exit status:")),
        "status": words(re.search(r"^ +jiffy status .*$", main, re.M).group(0)) - {"-"},
        "history": words(help_text(jiffy_bin, "history")),
        "report": words(help_text(jiffy_bin, "report")),
    }


def test_help_words_are_found(jiffy_bin):
    words = help_words(jiffy_bin)
    assert {"-n", "-np", "--cpus-per-task", "-bind-to", "--tag-output", "-configfile", "--timeout",
            "-wd", "--allow-run-as-root"} <= words["launch"], sorted(words["launch"])
    assert {"--cores", "--history", "--foreground"} <= words["daemon"]
    assert {"-d", "--interval", "--batch"} <= words["top"]
    assert words["status"] == {"--json"}
    assert {"--since", "--slowest", "--db"} <= words["history"]
    assert {"-o", "--last-run"} <= words["report"]


def test_every_help_option_is_offered(comp, jiffy_bin):
    """Each option word of the help texts, completed from its dashes: every
    long option of `jiffy --help` is offered for `jiffy --`, and every word
    as --help spells it for `jiffy -`."""
    for context, words in help_words(jiffy_bin).items():
        names = {n for n, _, _ in options_of(context)} | ({"help", "version"} if context == "launch" else set())
        unknown = sorted(w for w in words if w.lstrip("-") not in names)
        assert not unknown, f"--help names options the {context} parser does not take: {unknown}"
        lone, double = comp.set(prefix(context) + "-"), comp.set(prefix(context) + "--")
        missing = sorted(w for w in words if w not in lone or (w.startswith("--") and w not in double))
        assert not missing, f"not offered for `{prefix(context)}-`/`--`: {missing}"


def test_help_spellings_only_for_a_lone_dash(comp, jiffy_bin):
    """What `jiffy -` offers is exactly what --help spells, --help/--version
    included."""
    words = help_words(jiffy_bin)["launch"] | {"--help", "--version"}
    assert comp.set("jiffy -") == words, sorted(comp.set("jiffy -") ^ words)


# ---------------------------------------------------------------- real bash, on a terminal


def type_into_bash(mode: str, cwd: Path, keys: str, timeout=20.0) -> str:
    """Types `jiffy ` and keys into an interactive bash in which `jiffy` is a
    function printing its arguments as <arg>; returns what it printed."""
    setup = ""
    if mode == "bash-completion":
        setup += f". {BASH_COMPLETION}\n"
    setup += (f". {SCRIPT}\n"
              "jiffy() { printf 'ARGS'; printf '<%s>' \"$@\"; printf 'END\\n'; }\n"
              "bind 'set bell-style none'\n"
              "echo SET''UP\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "TERM": "dumb",
           "PS1": "$ ", "LC_ALL": "C"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive bash
        os.chdir(cwd)
        os.execve(BASH, [BASH, "--norc", "--noprofile", "-i"], env)
    out = b""
    deadline = time.time() + timeout

    def read_until(what: bytes, after: int) -> bool:
        nonlocal out
        while what not in out[after:] and time.time() < deadline:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    out += os.read(fd, 65536)
                except OSError:
                    return False
        return what in out[after:]

    try:
        os.write(fd, setup.encode())
        assert read_until(b"SETUP", 0), out.decode(errors="replace")
        start = len(out)
        # readline takes the keys one at a time, completing at each TAB before
        # it reads on.
        os.write(fd, ("jiffy " + keys).encode())
        os.write(fd, b"\n")
        read_until(b"END", start)
        os.write(fd, b"exit\n")
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    text = out[start:].decode(errors="replace")
    m = re.search(r"ARGS(<.*?>)END", text)
    assert m, text
    return m.group(1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("keys,args", [
    ("--backend sl\t", "<--backend><slurm>"),
    ("--mpi=pm\tx", "<--mpi=pmix>"),
    ("-bind-to core:ov\t", "<-bind-to><core:overload-allowed>"),
    ("--tag-o\t-n 2 ./a.o\t", "<--tag-output><-n><2><./a.out>"),
    ("hist\t--sl\t3", "<history><--slowest><3>"),
    ("-n 1 a : --np=1 -wdir /us\t", "<-n><1><a><:><--np=1><-wdir></usr/>"),
])
def test_completion_on_a_terminal(mode, tmp_path, keys, args):
    Completion(mode, tmp_path)  # a.out and the rest
    assert type_into_bash(mode, tmp_path, keys) == args
