"""Docs stay true: every technician command has --help with an example and a README entry."""

from __future__ import annotations

import pytest
from provkit import ROOT, cimedge

COMMANDS = [["provision"], ["ca", "init"], ["ca", "sign"], ["ca", "server"], ["ca", "client"],
            ["ca", "mosquitto"], ["backend", "keygen"], ["backend", "add"],
            ["backend", "expire"], ["backend", "remove"], ["backend", "list"],
            ["backend", "install"], ["doctor"], ["tail"], ["points"], ["buffer", "inspect"],
            ["rotate-key"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_an_example_and_the_readme_names_the_command(command):
    out = cimedge(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "example: cimedge " + " ".join(command) in out.stdout
    assert f"`cimedge {' '.join(command)}" in (ROOT / "README.md").read_text()


def test_a_bad_option_is_one_sentence_and_exit_2():
    out = cimedge("doctor", "--timeout", "soon")
    assert out.returncode == 2
    assert out.stderr.splitlines()[-1] == ("cimedge doctor: error: argument --timeout: invalid "
                                           "float value: 'soon'")
