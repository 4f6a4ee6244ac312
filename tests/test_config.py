"""One Settings object from defaults < config file < environment < flags, and a --help that helps."""

from __future__ import annotations

from pathlib import Path

import pytest

from npcserver.cli import build_parser
from npcserver.config import Settings, SettingsError, load_settings, setting_fields


def test_later_sources_win(tmp_path: Path) -> None:
    config = tmp_path / "npc.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\nend-silence-ms = 400\nspeculative = false\n')
    settings = load_settings({"port": "9100"}, config_file=config,
                             environ={"NPCSERVER_HOST": "::1", "NPCSERVER_LOG_JSON": "yes"})
    assert (settings.port, settings.host, settings.end_silence_ms) == (9100, "::1", 400)
    assert settings.speculative is False and settings.log_json is True
    assert load_settings({}, environ={}) == Settings()


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"port": "eighty"}, {}, "--port: port must be a int"),
        ({"device": "tpu"}, {}, "device must be one of auto, cpu, cuda"),
        ({}, {"NPCSERVER_SPECULATIVE": "maybe"}, "NPCSERVER_SPECULATIVE: speculative must be a bool"),
    ],
)
def test_bad_values_name_their_source(flags: dict, environ: dict, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(flags, environ=environ)


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "npc.toml"
    config.write_text("prot = 9000\n")
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load_settings({}, config_file=config, environ={})


def test_serve_help_explains_every_option_in_groups() -> None:
    help_text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for f in setting_fields():
        assert "--" + f.name.replace("_", "-") in help_text
        assert f"NPCSERVER_{f.name.upper()}" in help_text.replace("\n", "").replace(" ", "")
    for title in ("network:", "models:", "turn taking and latency:", "limits:", "security:", "logs:"):
        assert title in help_text
