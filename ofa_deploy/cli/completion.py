"""``ofa-deploy completion bash|zsh|fish``: a shell completion script for the verbs and their flags.

The script is written from the parser itself (every verb, its flags, the backends' flags, and the
device profile names for ``--device``), so it never drifts from the CLI; install it with e.g.
``ofa-deploy completion bash > ~/.local/share/bash-completion/completions/ofa-deploy``.
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "fish")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``ofa-deploy completion``."""
    p = subparsers.add_parser("completion", help="print a shell completion script (bash, zsh or fish)")
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(run=run, all_verbs=subparsers)  # every verb's parser, complete once all are registered


def run(args: argparse.Namespace) -> int:
    """Print the completion script for ``args.shell``."""
    from ofa_deploy.backend.profiles import profile_names

    verbs = _verbs(args.all_verbs)
    script = {"bash": _bash, "zsh": _zsh, "fish": _fish}[args.shell](verbs, profile_names())
    print(script, end="")
    return 0


def _verbs(action: argparse._SubParsersAction) -> dict[str, list[str]]:
    """verb -> its long flags, sorted."""
    return {
        verb: sorted(f for f in sub._option_string_actions if f.startswith("--"))
        for verb, sub in sorted(action.choices.items())
    }


def _bash(verbs: dict[str, list[str]], profiles: list[str]) -> str:
    cases = "\n".join(f'        {verb}) flags="{" ".join(flags)}" ;;' for verb, flags in verbs.items())
    return f"""# bash completion for ofa-deploy (ofa-deploy completion bash)
_ofa_deploy() {{
    local cur prev verb flags i
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    verb=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in -*) ;; *) verb="${{COMP_WORDS[i]}}"; break ;; esac
    done
    if [[ -z "$verb" ]]; then
        COMPREPLY=($(compgen -W "{" ".join(verbs)} --help --version -v -q" -- "$cur"))
        return
    fi
    if [[ "$prev" == "--device" ]]; then
        COMPREPLY=($(compgen -W "{" ".join(profiles)}" -- "$cur") $(compgen -f -- "$cur"))
        return
    fi
    case "$verb" in
{cases}
        *) flags="" ;;
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _ofa_deploy ofa-deploy
"""


def _zsh(verbs: dict[str, list[str]], profiles: list[str]) -> str:
    return "#compdef ofa-deploy\n# zsh completion for ofa-deploy (ofa-deploy completion zsh)\n" + (
        "autoload -U +X bashcompinit && bashcompinit\n" + _bash(verbs, profiles).split("\n", 1)[1]
    )


def _fish(verbs: dict[str, list[str]], profiles: list[str]) -> str:
    lines = ["# fish completion for ofa-deploy (ofa-deploy completion fish)", "complete -c ofa-deploy -f"]
    lines.append(f"complete -c ofa-deploy -n __fish_use_subcommand -a '{' '.join(verbs)}'")
    for verb, flags in verbs.items():
        for flag in flags:
            lines.append(f"complete -c ofa-deploy -n '__fish_seen_subcommand_from {verb}' -l {flag[2:]}")
    lines.append(f"complete -c ofa-deploy -l device -a '{' '.join(profiles)}' -F")
    return "\n".join(lines) + "\n"
