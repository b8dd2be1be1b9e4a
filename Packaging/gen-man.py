#!/usr/bin/env python3
"""Writes a manual page (roff) for a command from its argument parser: the JSON the program
prints with `--experimental-dump-help` (swift-argument-parser's ToolInfo). Every
subcommand, argument, option and flag of the parser is in the page, with its help text and
default, so the page cannot drift from the program. Hand-written prose (description, files,
see also) comes from Packaging/man/NAME.SECTION.in when it exists: its `.SH` sections are
placed after OPTIONS/COMMANDS.

  Packaging/gen-man.py --section 8 --date 2026-12-02 --version 0.9.0 dump.json [extra.in] > segguardctl.8
"""
import argparse, json, sys


def esc(text):
    """Roff-escapes free text: backslashes, leading dots and quotes, hyphens kept literal."""
    text = (text or "").replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def names(arg):
    out = []
    for n in arg.get("names") or []:
        prefix = {"long": "--", "short": "-", "longWithSingleDash": "-"}.get(n["kind"], "--")
        out.append(prefix + n["name"])
    return out


def argument_lines(arg):
    kind = arg["kind"]
    value = arg.get("valueName") or "value"
    if kind == "positional":
        head = f"\\fI{esc(value)}\\fR" + ("..." if arg.get("isRepeating") else "")
    else:
        flags = ", ".join(f"\\fB{esc(n)}\\fR" for n in names(arg))
        head = flags if kind == "flag" else f"{flags} \\fI{esc(value)}\\fR"
    body = esc(arg.get("abstract", ""))
    if arg.get("discussion"):
        body += "\n.br\n" + esc(arg["discussion"])
    if arg.get("defaultValue") not in (None, "") and kind != "flag":
        body += f" (default: {esc(str(arg['defaultValue']))})"
    if arg.get("allValues"):
        body += " One of: " + esc(", ".join(arg["allValues"])) + "."
    return [".TP", head, body]


def synopsis(path, command):
    parts = [f"\\fB{esc(' '.join(path))}\\fR"]
    for arg in command.get("arguments") or []:
        if not arg.get("shouldDisplay", True) or arg["kind"] == "positional":
            continue
        n = names(arg)
        if not n or n[0] in ("--help", "-h", "--version"):
            continue
        item = f"\\fB{esc(n[0])}\\fR" + ("" if arg["kind"] == "flag" else f" \\fI{esc(arg.get('valueName') or 'value')}\\fR")
        parts.append(f"[{item}]" if arg.get("isOptional", True) else item)
    for arg in command.get("arguments") or []:
        if arg["kind"] == "positional" and arg.get("shouldDisplay", True):
            v = f"\\fI{esc(arg.get('valueName') or 'value')}\\fR" + ("..." if arg.get("isRepeating") else "")
            if arg.get("parsingStrategy") == "postTerminator":
                v = "\\fB\\-\\-\\fR " + v
            parts.append(f"[{v}]" if arg.get("isOptional") else v)
    return " ".join(parts)


def visible(args):
    return [a for a in args or [] if a.get("shouldDisplay", True) and not set(names(a)) & {"--help", "-h", "--version", "--experimental-dump-help"}]


def section_for(path, command, out, depth):
    """A command's synopsis, description and arguments; then its subcommands, recursively."""
    subs = [s for s in command.get("subcommands") or [] if s.get("shouldDisplay", True) and s["commandName"] != "help"]
    if depth > 0:
        out += [".SS " + esc(" ".join(path[1:])), synopsis(path, command) + (" \\fIsubcommand\\fR" if subs else ""), ".PP"]
        out.append(esc(command.get("abstract", "")))
        if command.get("discussion"):
            out += [".PP", esc(command["discussion"])]
    for arg in visible(command.get("arguments")):
        out += argument_lines(arg)
    for sub in subs:
        section_for(path + [sub["commandName"]], sub, out, depth + 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", required=True)
    ap.add_argument("--date", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("dump")
    ap.add_argument("extra", nargs="?")
    a = ap.parse_args()
    tool = json.load(open(a.dump))
    cmd = tool["command"]
    name = cmd["commandName"]
    subs = [s for s in cmd.get("subcommands") or [] if s.get("shouldDisplay", True) and s["commandName"] != "help"]
    out = [f'.TH "{name.upper()}" "{a.section}" "{a.date}" "segment-guard {a.version}" "segment-guard"',
           ".SH NAME", f"{esc(name)} \\- {esc(cmd.get('abstract', ''))}",
           ".SH SYNOPSIS", synopsis([name], cmd) + (" \\fIcommand\\fR ..." if subs else "")]
    extra = open(a.extra, encoding="utf-8").read().rstrip("\n") if a.extra else ""
    # The hand-written DESCRIPTION, when there is one, says more than the parser's discussion.
    if cmd.get("discussion") and ".SH DESCRIPTION" not in extra:
        out += [".SH DESCRIPTION", esc(cmd["discussion"])]
    if visible(cmd.get("arguments")):
        out.append(".SH OPTIONS")
        for arg in visible(cmd.get("arguments")):
            out += argument_lines(arg)
    if subs:
        out.append(".SH COMMANDS")
        for sub in subs:
            section_for([name, sub["commandName"]], sub, out, 1)
    if extra:
        out.append(extra)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
