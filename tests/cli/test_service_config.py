"""config.yml: defaults, validation with precise errors, BioMAJ 3 environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from biomaj.config.render import render_config_markdown, render_config_yaml
from biomaj.config.service import config_from_mapping, config_path_from, iter_settings, load_config
from biomaj.errors import ConfigError

PROJECT = Path(__file__).resolve().parents[2]


def test_empty_file_gives_embedded_defaults(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("")
    cfg = load_config(path, environ={})
    assert cfg.settings.web.port == 5000
    assert cfg.bus_url == "memory://"
    assert cfg.state_url == "memory://"
    assert cfg.storage_url == ""
    assert cfg.root == tmp_path.resolve()
    assert cfg.global_properties == tmp_path.resolve() / "conf" / "global.properties"


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file.*biomaj init"):
        load_config(tmp_path / "nope.yml", environ={})


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("web:\n  port: 5000\n bad: [\n")
    with pytest.raises(ConfigError, match=r"config.yml: line \d+ column \d+: not valid YAML"):
        load_config(path, environ={})


def test_wrong_type_names_the_key_and_value(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("web:\n  port: lots\n")
    with pytest.raises(ConfigError, match=r"web\.port: .*integer.*'lots'"):
        load_config(path, environ={})


def test_unknown_key_is_an_error(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("web:\n  prot: 5000\n")
    with pytest.raises(ConfigError, match=r"web\.prot: unknown key"):
        load_config(path, environ={})


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path, environ={})


def test_biomaj3_sections_are_ignored_with_a_warning(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("consul:\n  host: null\nzipkin:\n  url: http://x\nweb:\n  port: 5001\n")
    cfg = load_config(path, environ={})
    assert cfg.settings.web.port == 5001
    assert any("consul" in w for w in cfg.warnings)


def test_upstream_environment_names_override_the_file(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("web:\n  port: 5000\n")
    env = {
        "WEB_PORT": "6000",
        "RABBITMQ_HOST": "127.0.0.1",
        "RABBITMQ_USER": "guest",
        "RABBITMQ_PASSWORD": "p@ss/word",
        "RABBITMQ_VHOST": "/",
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": "6380",
        "MONGO_URL": "mongodb://127.0.0.1:27017",
    }
    cfg = load_config(path, environ=env)
    assert cfg.settings.web.port == 6000
    assert cfg.bus_url == "amqp://guest:p%40ss%2Fword@127.0.0.1:5672/%2F"
    assert cfg.state_url == "redis://127.0.0.1:6380/0"
    assert cfg.storage_url == "mongodb://127.0.0.1:27017"


def test_empty_environment_values_do_not_count(tmp_path):
    cfg = config_from_mapping({"web": {"port": 5002}}, None, environ={"WEB_PORT": ""})
    assert cfg.settings.web.port == 5002


def test_bad_environment_integer(tmp_path):
    with pytest.raises(ConfigError, match="environment WEB_PORT: expected an integer"):
        config_from_mapping({}, None, environ={"WEB_PORT": "http"})


def test_explicit_urls_win_over_host_sections():
    cfg = config_from_mapping(
        {"bus": {"url": "memory://"}, "rabbitmq": {"host": "mq"}, "state": {"url": "memory://"}, "redis": {"host": "r"}},
        None,
        environ={},
    )
    assert cfg.bus_url == "memory://" and cfg.state_url == "memory://"


def test_config_path_precedence():
    assert config_path_from("a.yml", {"BIOMAJ_CONFIG": "b.yml"}) == Path("a.yml")
    assert config_path_from(None, {"BIOMAJ_CONFIG": "b.yml"}) == Path("b.yml")
    assert config_path_from(None, {}) == Path("config.yml")


def test_secrets_are_not_in_the_repr(tmp_path):
    cfg = config_from_mapping({"web": {"secret": "s3cr3t"}, "rabbitmq": {"password": "hunter2"}}, None, environ={})
    assert "s3cr3t" not in repr(cfg.settings) and "hunter2" not in repr(cfg.settings)


def test_example_is_rendered_from_the_declared_settings_and_is_valid():
    example = PROJECT / "config.example.yml"
    assert example.read_text() == render_config_yaml(), "run: python -m biomaj.config.render example > config.example.yml"
    cfg = config_from_mapping(yaml.safe_load(example.read_text()), None, environ={})
    assert cfg.settings.web.port == 5000


def test_every_key_has_a_comment_in_the_example_and_a_row_in_the_docs():
    text = render_config_yaml()
    docs = (PROJECT / "docs" / "configuration.md").read_text()
    assert docs == render_config_markdown(), "run: python -m biomaj.config.render > docs/configuration.md"
    for key, _default, help_text in iter_settings():
        assert help_text, f"{key} has no description"
        assert f"# {help_text}" in text
        assert f"`{key}`" in docs
