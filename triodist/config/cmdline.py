"""dnsdist's own command line (``triodist --supervised -C rules.lua -l ADDR ...``).

A unit file, a container entry point or a test harness written for dnsdist starts
triodist by changing the binary's name only, so its options are read the way dnsdist
reads them (GNU getopt): options and addresses in any order, ``--`` ends the options,
a long option may be shortened to a unique prefix or given ``--name=value``, short
options cluster (``-vC rules.lua``), and ``-h``/``-V`` act where they stand, before a
later error is seen.  This module only reads the line; ``triodist.cli`` acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from triodist.ops.console.settings import decode_key
from triodist.rules.matchers import NetmaskGroup

#: Where dnsdist reads its configuration when no -C is given.
DEFAULT_CONFIG = "/etc/dnsdist/dnsdist.conf"

#: Short options: the letter, and whether it takes an argument (dnsdist's "a:cC:e:g:hk:l:u:vV").
SHORT: dict[str, bool] = {
    "a": True,
    "c": False,
    "C": True,
    "e": True,
    "g": True,
    "h": False,
    "k": True,
    "l": True,
    "u": True,
    "v": False,
    "V": False,
}

#: Long options: the short letter (or the long name) they stand for, and whether they
#: take an argument.  ``--log-timestamps`` is dnsdist 1.8's.
LONG: dict[str, tuple[str, bool]] = {
    "acl": ("a", True),
    "check-config": ("check-config", False),
    "client": ("c", False),
    "config": ("C", True),
    "disable-syslog": ("disable-syslog", False),
    "execute": ("e", True),
    "gid": ("g", True),
    "help": ("h", False),
    "local": ("l", True),
    "log-timestamps": ("log-timestamps", False),
    "setkey": ("k", True),
    "supervised": ("supervised", False),
    "uid": ("u", True),
    "verbose": ("v", False),
    "version": ("V", False),
}


@dataclass
class DnsdistLine:
    """What a dnsdist command line asks for."""

    config: str = DEFAULT_CONFIG
    config_given: bool = False
    acl: list[str] = field(default_factory=list)
    check_config: bool = False
    client: bool = False
    command: str | None = None
    key_text: str | None = None
    key: bytes | None = None
    locals: list[str] = field(default_factory=list)
    uid: str | None = None
    gid: str | None = None
    verbose: bool = False
    supervised: bool = False
    log_timestamps: bool = False
    #: Backend addresses, or with -c/-e the console's address (the last one).
    addresses: list[str] = field(default_factory=list)
    #: -h or -V, met before anything wrong: print that and exit 0.
    exit_with: str | None = None


class CommandLineError(Exception):
    """A wrong command line: ``status`` is the exit status, ``usage`` whether dnsdist
    would print its usage too (an unknown option, a missing argument)."""

    def __init__(self, message: str, status: int = 1, usage: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.usage = usage


def parse(argv: list[str], prog: str = "triodist") -> DnsdistLine:
    """Read ``argv`` (without the program's name) as dnsdist does; ``CommandLineError``
    for what dnsdist refuses, with its status (1)."""
    line = DnsdistLine()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if token == "--":
            positional += argv[i:]
            break
        if token.startswith("--"):
            name, has_value, value = token[2:].partition("=")
            option, takes = _long(name, prog)
            if has_value and not takes:
                raise CommandLineError(
                    f"{prog}: option '--{option}' doesn't allow an argument", usage=True
                )
            if takes and not has_value:
                if i >= len(argv):
                    raise CommandLineError(
                        f"{prog}: option '--{option}' requires an argument", usage=True
                    )
                value = argv[i]
                i += 1
            letter = LONG[option][0]
            if _apply(line, letter, value if takes else None):
                return line
            continue
        if token.startswith("-") and token != "-":
            j = 1
            while j < len(token):
                letter = token[j]
                j += 1
                if letter not in SHORT:
                    raise CommandLineError(f"{prog}: invalid option -- '{letter}'", usage=True)
                arg: str | None = None
                if SHORT[letter]:
                    if j < len(token):
                        arg, j = token[j:], len(token)
                    elif i < len(argv):
                        arg = argv[i]
                        i += 1
                    else:
                        raise CommandLineError(
                            f"{prog}: option requires an argument -- '{letter}'", usage=True
                        )
                if _apply(line, letter, arg):
                    return line
            continue
        positional.append(token)
    line.addresses = positional
    return line


def _long(name: str, prog: str) -> tuple[str, bool]:
    if name in LONG:
        return name, LONG[name][1]
    matches = sorted(option for option in LONG if option.startswith(name)) if name else []
    if len(matches) == 1:
        return matches[0], LONG[matches[0]][1]
    if matches:
        listed = " ".join(f"'--{m}'" for m in matches)
        raise CommandLineError(
            f"{prog}: option '--{name}' is ambiguous; possibilities: {listed}", usage=True
        )
    raise CommandLineError(f"{prog}: unrecognized option '--{name}'", usage=True)


def _apply(line: DnsdistLine, option: str, value: str | None) -> bool:
    """Record one option; True when it ends the reading (-h, -V)."""
    if option in ("h", "V"):
        line.exit_with = option
        return True
    if option == "a":
        assert value is not None
        # dnsdist adds one mask per --acl; a comma-separated list is read as several
        # (a unit file written for a later dnsdist may use it), each one checked now.
        for mask in (m.strip() for m in value.split(",")):
            try:
                NetmaskGroup().addMask(mask)
            except ValueError:
                raise CommandLineError(f"Unable to convert '{mask}' to a netmask") from None
            line.acl.append(mask)
    elif option == "k":
        assert value is not None
        try:
            line.key = decode_key(value)
        except ValueError as exc:
            raise CommandLineError(f"Unable to decode key '{value}': {exc}") from None
        line.key_text = value
    elif option == "C":
        assert value is not None
        line.config, line.config_given = value, True
    elif option == "l":
        assert value is not None
        line.locals.append(value.strip())
    elif option == "e":
        line.command = value
    elif option == "u":
        line.uid = value
    elif option == "g":
        line.gid = value
    else:
        flags = {
            "c": "client",
            "v": "verbose",
            "check-config": "check_config",
            "supervised": "supervised",
            "log-timestamps": "log_timestamps",
            "disable-syslog": None,
        }
        attribute = flags[option]
        if attribute is not None:  # --disable-syslog: triodist never logs to syslog
            setattr(line, attribute, True)
    return False


def usage(prog: str = "triodist") -> str:
    """The options of dnsdist's command line, as triodist reads them."""
    return f"""\
Usage: {prog} [OPTION]... [ADDRESS]...   (dnsdist's command line)
       {prog} {{serve,check-config,console,replay,demo}} ...   (triodist's own)

-a,--acl netmask      Add this netmask (or comma-separated netmasks) to the ACL
-C,--config file      Load configuration from 'file' (default: {DEFAULT_CONFIG})
-c,--client           Operate as a client of a running server's console; an
                      IP:PORT argument is the console's address
-k,--setkey KEY       The console's key (base64), as setKey()
--check-config        Validate the configuration file and exit (0: OK, 1: error)
-e,--execute cmd      Connect to the console and execute 'cmd'
-g,--gid gid          Change the process group ID after binding sockets
-h,--help             Display this message
-l,--local address    Listen on this local address (repeatable)
--supervised          Accepted: triodist never opens a console on its terminal
--disable-syslog      Accepted: triodist logs to standard error only
--log-timestamps      Start each log line with the date and time
-u,--uid uid          Change the process user ID after binding sockets
-v,--verbose          Enable verbose mode
-V,--version          Show the version and exit

ADDRESS: a backend to forward to (port 53 when none is given).
"""
