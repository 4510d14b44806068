"""The command-line contract of DESIGN.md and the package's public surface, pinned.

A change here is a change users and scripts see: it needs a note in the
README and, for the contract's fixed forms, a decision.
"""

from __future__ import annotations

import peersync
from peersync.cli import build_parser

CONTRACT = {
    # command: the options DESIGN.md fixes
    "init": {"--relay", "--name"},
    "invite": set(),
    "join": {"--relay"},
    "sync": set(),
    "run": set(),
    "status": {"--json"},
    "doctor": {"--json"},
}


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices


def test_every_contract_command_exists_with_its_options():
    commands = _subcommands()
    for name, options in CONTRACT.items():
        assert name in commands, name
        present = {opt for a in commands[name]._actions for opt in a.option_strings}
        assert options <= present, (name, options - present)


def test_contract_positional_arguments():
    commands = _subcommands()

    def positionals(name):
        return [a.dest for a in commands[name]._actions if not a.option_strings]

    assert positionals("init") == ["store_dir"]
    assert positionals("invite") == ["store"]
    assert positionals("join") == ["code", "store_dir"]
    assert positionals("sync") == ["store"]
    assert positionals("run") == ["store"]
    assert positionals("status") == ["store"]


def test_public_surface_is_pinned():
    assert peersync.__all__ == sorted(peersync.__all__) == ["__version__"]


def test_usage_errors_exit_2_without_traceback(make_peers, tmp_path):
    """Bad input gets a clear error and exit status 2 (DESIGN: refused / bad input)."""
    (alice,) = make_peers(1, join=False)
    result = alice.cli("frobnicate")
    assert result.code == 2
    result = alice.cli("init", str(tmp_path / "x"))  # --relay missing
    assert result.code == 2
    assert "--relay" in result.err
    result = alice.cli("config", "no_such_setting", "1")
    assert result.code == 2 and result.err.count("\n") == 1


def test_commands_on_a_peer_without_identity_say_what_to_do(tmp_path):
    from conftest import Peer

    nobody = Peer("nobody", tmp_path / "home", tmp_path / "store", tmp_path / "relay")
    for args in (("sync",), ("status",), ("invite",)):
        result = nobody.cli(*args)
        assert result.code == 2, args
        assert "peersync init" in result.err and result.err.count("\n") == 1
