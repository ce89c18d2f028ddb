"""Operator mistakes get one line on stderr naming what to fix, exit code 1, and no traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.localnet import ffnode_cmd


def run(*words: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(ffnode_cmd(*words), capture_output=True, text=True, timeout=120, check=False, cwd=cwd)


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
    assert info["profile"] == "default" and 'profile = "default"' in (home / "config.toml").read_text()  # auto
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
    assert_user_error(run("init", "--home", str(tmp_path / "y"), "--profile", "huge"), "unknown profile 'huge'")
    assert_user_error(run("init", "--home", str(tmp_path / "z"), "--bootstrap", "/ip4/127.0.0.1/tcp/1"), "lacks /p2p/")
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()  # nothing half-made


def _config(home: Path) -> dict:
    import tomllib

    return tomllib.loads((home / "config.toml").read_text())


def test_init_needs_the_federations_classes_for_a_path_and_stores_it_absolute(tmp_path: Path) -> None:
    from ffnode.data.sources import save_npz

    save_npz(tmp_path / "site.npz", {"train": (np.zeros((4, 8, 8), np.uint8), np.array([1, 1, 2, 2]))})
    out = run("init", "--home", "a", "--data", "site.npz", cwd=tmp_path)  # no --classes: refused, saying what to pass
    assert_user_error(out, "this data holds 1, 2 (e.g. --classes 0,1,2 if those are all of them)")
    assert "--data site.npz is a path" in out.stderr and not (tmp_path / "a").exists()
    out = run("init", "--home", "a", "--data", "site.npz", "--classes", "0,1,2,3", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    config = _config(tmp_path / "a")
    assert config["data"]["spec"] == str(tmp_path / "site.npz")  # `start` from another directory finds it
    assert config["federation"]["classes"] == ["0", "1", "2", "3"] and json.loads(out.stdout)["local_classes"] == [
        "1",
        "2",
    ]


def _png16_folder(root: Path, size: int, count: int = 3) -> None:
    rng = np.random.default_rng(size)
    for c in ("ct", "xray"):
        for i in range(count):
            path = root / c / f"patient{i % 2}" / f"{size}-{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 65536, (size, size), dtype=np.uint16)).save(path)
    (root / "ct" / "notes.txt").write_text("not an image")
    (root / "ct" / ".DS_Store").write_text("")


def test_init_reads_16_bit_nested_folders_and_says_what_it_skipped(tmp_path: Path) -> None:
    _png16_folder(tmp_path / "scans", 28)
    out = run("init", "--home", str(tmp_path / "a"), "--data", str(tmp_path / "scans"), "--classes", "ct,xray")
    assert out.returncode == 0, out.stderr
    assert f"warning: skipped 2 files in {tmp_path / 'scans'}: 1 .txt, 1 hidden" in out.stderr
    assert "read 6 16-bit images" in out.stderr and "profile 'cpu' chosen for 28x28x1 images" in out.stderr
    assert "6 images of 28x28x1" in out.stderr
    config = _config(tmp_path / "a")
    assert config["learning"]["profile"] == "cpu" and config["federation"]["image_shape"] == "28x28x1"


def test_init_resizes_images_of_other_sizes_or_refuses_them(tmp_path: Path) -> None:
    from ffnode.data.sources import load_dataset

    data = tmp_path / "scans"
    _png16_folder(data, 64)
    _png16_folder(data, 28, count=1)
    mixed = run("init", "--home", str(tmp_path / "a"), "--data", str(data), "--classes", "ct,xray")
    assert_user_error(mixed, "holds images of 2 sizes: 6 of 64x64")
    assert "--resize 64x64" in mixed.stderr
    out = run("init", "--home", str(tmp_path / "a"), "--data", str(data), "--classes", "ct,xray", "--resize", "28x28")
    assert out.returncode == 0, out.stderr
    assert "warning: resized 6 images from 64x64 to 28x28" in out.stderr
    config = _config(tmp_path / "a")
    assert config["data"]["spec"] == str(tmp_path / "a" / "data.npz") and (tmp_path / "a" / "data.npz").exists()
    assert config["federation"]["image_shape"] == "28x28x1"
    local = load_dataset(config["data"]["spec"], classes=config["federation"]["classes"])  # what `start` loads
    assert local.image_shape == (28, 28, 1) and local.labels.tolist() == [0] * 4 + [1] * 4
    # a profile sized for other images: refused naming the one that fits, kept only when forced
    tiny = ["--data", str(data), "--classes", "ct,xray", "--resize", "64x64", "--profile", "tiny"]
    refused = run("init", "--home", str(tmp_path / "b"), *tiny)
    assert_user_error(refused, "profile 'tiny' was sized for 8x8x1 images and these are 64x64x1")
    assert "profile 'cpu' fits them: pass --profile cpu" in refused.stderr and not (tmp_path / "b").exists()
    forced = run("init", "--home", str(tmp_path / "b"), *tiny, "--force-profile", "--json")
    assert forced.returncode == 0, forced.stderr
    assert any(
        "64.0x the pixels" in note and "kept (--force-profile)" in note for note in json.loads(forced.stdout)["notes"]
    )
    assert _config(tmp_path / "b")["learning"]["profile"] == "tiny"


def test_broken_homes_and_configs(tmp_path: Path, home: Path) -> None:
    assert_user_error(run("start", "--home", str(tmp_path / "missing")), "ffnode init")
    stopped = run("status", "--home", str(home), "--json")  # never started: what its (empty) store answers
    assert stopped.returncode == 3 and "Traceback" not in stopped.stderr, stopped.stderr
    assert json.loads(stopped.stdout)["state"] == "stopped" and json.loads(stopped.stdout)["answering_experts"] == 0
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
