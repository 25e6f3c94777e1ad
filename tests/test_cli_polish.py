"""CLI polish, run as a user runs it: help that reads like help, ``--version``, error text kept
verbatim, a busy port refused before "serving", a node's vkey for trust files, example models,
and a devnet table that fits a narrow terminal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import onnx
from rich.console import Console

from verinfer import note, tensors
from verinfer.cli.devnet import _nodes_table

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


def _run(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERINFER_HOME": str(home), "COLUMNS": "100"}
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=timeout, env=env
    )


def test_help_shows_flags_as_flags_and_values_as_click_names(tmp_path: Path) -> None:
    shown = _run(tmp_path, "model", "publish", "--help")
    assert shown.returncode == 0
    for typer_type in ("<bool>", "<str>", "<list[str]>", "{file}", "{FILE}", "<path>"):
        assert typer_type not in shown.stdout, typer_type
    assert "Usage: verinfer model publish [OPTIONS] FILE" in shown.stdout
    assert "--calibrate / --no-calibrate" in shown.stdout
    assert "--tag TEXT" in shown.stdout
    assert "--help " in shown.stdout


def test_version(tmp_path: Path) -> None:
    shown = _run(tmp_path, "--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == f"verinfer {version('verinfer')}"


def test_errors_are_printed_verbatim_not_as_rich_markup(tmp_path: Path) -> None:
    """Rich markup took "[demo]" (as in pip install 'verinfer[demo]') for a style tag."""
    done = _run(tmp_path, "example", "[demo]", "--out", str(tmp_path / "m.onnx"))
    assert done.returncode == 1
    assert "unknown example '[demo]'" in done.stderr


def test_node_start_refuses_a_busy_port_before_serving(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _run(tmp_path, "node", "start", "--data", str(tmp_path / "node"), "--port",
                    str(port))  # fmt: skip
    assert done.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in done.stderr
    assert "serving" not in done.stderr
    assert not (tmp_path / "node").exists()  # refused before the node opened its data


def test_node_vkey_prints_the_key_a_trust_file_needs(tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    skey, vkey = note.generate_key("node.example")
    (data / "node.skey").write_text(skey + "\n")
    shown = _run(tmp_path, "node", "vkey", "--data", str(data))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == vkey
    assert skey not in shown.stdout
    missing = _run(tmp_path, "node", "vkey", "--data", str(data), "--witness")
    assert missing.returncode == 1
    assert "has no witness key yet" in missing.stderr
    neither = _run(tmp_path, "node", "vkey")
    assert neither.returncode == 1
    assert "give --node URL or --data DIR" in neither.stderr
    empty = _run(tmp_path, "node", "vkey", "--data", str(tmp_path / "none"))
    assert empty.returncode == 1
    assert "no node key in" in empty.stderr


def test_example_writes_a_model_and_its_inputs(tmp_path: Path) -> None:
    model, inputs = tmp_path / "mlp.onnx", tmp_path / "x.npz"
    done = _run(tmp_path, "example", "mlp", "--out", str(model), "--inputs", str(inputs))
    assert done.returncode == 0, done.stderr
    loaded = onnx.load_model_from_string(model.read_bytes())
    assert [i.name for i in loaded.graph.input] == ["x"]
    assert tensors.decode_binary(inputs.read_bytes())["x"].shape == (1, 4)
    bad = _run(
        tmp_path, "example", "iris", "--out", str(model), "--inputs", str(tmp_path / "x.csv")
    )
    assert bad.returncode == 1
    assert "write .npz, .json or .npy" in bad.stderr


def test_devnet_table_folds_the_vkey_in_a_narrow_terminal() -> None:
    vkey = "node0.devnet+abcdef12+" + "A" * 43
    console = Console(width=80, record=True)
    console.print(_nodes_table([{"name": "node0", "url": "http://127.0.0.1:8600", "pid": 4242,
                                 "up": True, "log_size": 12, "vkey": vkey}]))  # fmt: skip
    text = console.export_text()
    assert "yes" in text
    assert "│ 12 " in text
    cells = [line.split("│")[-2].strip() for line in text.splitlines() if line.count("│") == 7]
    assert "".join(cells) == vkey  # folded over lines, nothing cut
