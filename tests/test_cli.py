"""Operator mistakes get one line on stderr naming what to fix, exit code 1, and no traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from harness.localnet import ffnode_cmd


def run(*words: str) -> subprocess.CompletedProcess:
    return subprocess.run(ffnode_cmd(*words), capture_output=True, text=True, timeout=120, check=False)


def assert_user_error(out: subprocess.CompletedProcess, needle: str) -> None:
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("cli") / "node"
    out = run("init", "--home", str(home), "--data", "digits", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["peer_id"].startswith("12D3KooW") and info["local_classes"] == [str(i) for i in range(10)]
    return home


def test_init_makes_a_private_home(home: Path) -> None:
    assert (home / "identity.key").stat().st_mode & 0o777 == 0o600
    assert home.stat().st_mode & 0o777 == 0o700
    ident = json.loads(run("id", "--home", str(home), "--json").stdout)
    assert not ident["running"] and ident["addrs"] == [f"/ip4/127.0.0.1/tcp/4747/p2p/{ident['peer_id']}"]
    assert json.loads(run("artifacts", "--home", str(home), "--json").stdout) == []


def test_init_refuses_bad_input(tmp_path: Path, home: Path) -> None:
    assert_user_error(run("init", "--home", str(home)), "is not empty")
    assert_user_error(run("init", "--home", str(tmp_path / "x"), "--data", str(tmp_path / "no.npz")), "no.npz")
    assert_user_error(run("init", "--home", str(tmp_path / "y"), "--profile", "huge"), "unknown profile")
    assert_user_error(run("init", "--home", str(tmp_path / "z"), "--bootstrap", "/ip4/127.0.0.1/tcp/1"), "lacks /p2p/")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()  # nothing half-made


def test_broken_homes_and_configs(tmp_path: Path, home: Path) -> None:
    assert_user_error(run("start", "--home", str(tmp_path / "missing")), "ffnode init")
    assert_user_error(run("status", "--home", str(home)), "not running")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "identity.key").write_bytes((home / "identity.key").read_bytes())
    (broken / "identity.key").chmod(0o600)
    (broken / "config.toml").write_text("[network\nlisten = 1")
    assert_user_error(run("start", "--home", str(broken)), "not valid TOML")
    (broken / "config.toml").write_text((home / "config.toml").read_text() + "\n[extra]\nx = 1\n")
    assert_user_error(run("start", "--home", str(broken)), "unknown section")
    (broken / "config.toml").write_text((home / "config.toml").read_text().replace("mdns = false", "mdns = 3"))
    assert_user_error(run("start", "--home", str(broken)), "mdns should be a bool")
    (broken / "config.toml").write_text((home / "config.toml").read_text())
    (broken / "identity.key").chmod(0o644)
    assert_user_error(run("start", "--home", str(broken)), "chmod 600")
    (broken / "identity.key").chmod(0o600)
    (broken / "config.toml").write_text(
        (home / "config.toml").read_text().replace('spec = "digits"', 'spec = "/nowhere.npz"')
    )
    assert_user_error(run("start", "--home", str(broken)), "nowhere")


def test_text_from_peers_is_shown_as_written_never_read_as_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from ffnode.cli.output import styled, table

    table("t", ["a", "b"], [["[/] [bold red]PASSES[/]", styled("[red]ours[/]")]])
    assert "[/] [bold red]PASSES[/]" in capsys.readouterr().out
