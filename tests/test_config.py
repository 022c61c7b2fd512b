from pathlib import Path

import pytest

from agent.config import DEFAULT_CONFIG_PATH, Config, ConfigError, VadConfig, load_config


def test_the_shipped_default_config_loads_and_matches_the_typed_defaults():
    assert load_config(DEFAULT_CONFIG_PATH, environ={}) == Config()


@pytest.mark.parametrize("path", sorted((DEFAULT_CONFIG_PATH.parent).glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_file_loads(path):
    load_config(path, environ={})


def test_environment_variables_override_yaml_with_typed_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("vad:\n  end_of_turn_silence_ms: 700\n")
    config = load_config(
        path,
        environ={
            "VOICE_AGENT_VAD__END_OF_TURN_SILENCE_MS": "400",
            "VOICE_AGENT_LANGUAGE": "es",
            "VOICE_AGENT_SERVER__ICE_SERVERS": '[{urls: "stun:example.org"}]',
            "UNRELATED": "x",
        },
    )
    assert config.vad.end_of_turn_silence_ms == 400
    assert config.language == "es"
    assert config.server.ice_servers == [{"urls": "stun:example.org"}]


def test_an_unknown_key_names_the_key_and_the_allowed_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("vad:\n  agressiveness: 2\n")
    with pytest.raises(ConfigError, match=r"vad\.agressiveness.*aggressiveness"):
        load_config(path, environ={})


def test_an_invalid_value_names_the_key_and_the_allowed_values():
    with pytest.raises(ConfigError, match=r"vad\.aggressiveness; allowed values: 0, 1, 2, 3"):
        load_config(None, environ={"VOICE_AGENT_VAD__AGGRESSIVENESS": "5"})
    with pytest.raises(ConfigError, match=r"server\.port; expected an integer"):
        load_config(None, environ={"VOICE_AGENT_SERVER__PORT": "eighty"})


def test_a_missing_config_file_says_so():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/config.yaml", environ={})


def test_a_config_file_that_is_not_a_mapping_says_so(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- vad\n- server\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections, not list"):
        load_config(path, environ={})


def test_an_environment_variable_below_a_plain_key_says_the_key_is_not_a_section():
    with pytest.raises(ConfigError, match="VOICE_AGENT_LANGUAGE__X: language is not a section"):
        load_config(None, environ={"VOICE_AGENT_LANGUAGE__X": "1"})


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("VOICE_AGENT_SERVER__PORT", "true", r"invalid value True for server\.port; expected an integer"),
        ("VOICE_AGENT_VAD__MAX_TURN_SECONDS", "abc", r"'abc' for vad\.max_turn_seconds; expected a number"),
        ("VOICE_AGENT_VAD__ADAPTIVE_END_OF_TURN", "1", r"vad\.adaptive_end_of_turn; allowed values: true, false"),
        ("VOICE_AGENT_TTS__VOICES", "piper", r"tts\.voices; expected a list"),
        ("VOICE_AGENT_VAD", "5", r"vad must be a mapping, got 5"),
    ],
)
def test_values_of_the_wrong_type_are_refused_not_converted(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ={name: value})


def test_a_number_given_for_a_text_key_is_taken_as_written():
    assert load_config(None, environ={"VOICE_AGENT_LLM__MODEL": "2507"}).llm.model == "2507"


def test_sections_can_be_built_and_changed_in_code_without_a_file():
    assert VadConfig(end_of_turn_silence_ms=400).end_of_turn_silence_ms == 400
    config = Config(language="auto")
    config.server.port = 8080
    assert (config.language, config.server.port, Config().server.port) == ("auto", 8080, 8000)


def test_the_records_and_auth_sections_and_new_server_keys_default_to_the_contract():
    config = Config()
    assert config.server.allowed_origins == []
    assert config.server.max_request_bytes == 1_048_576
    records = config.records
    assert (records.enabled, records.store_audio, records.audio_format) == (True, True, "flac")
    assert records.database_url == ""
    assert records.data_path == Path("~/.local/share/voice-agent").expanduser()
    assert (records.retention_days, records.max_upload_bytes, records.max_audio_seconds) == (0, 100_000_000, 14_400)
    assert (records.job_concurrency, records.job_max_attempts, records.allow_private_urls) == (1, 3, False)
    auth = config.auth
    assert (auth.mode, auth.token_ttl_hours, auth.allow_registration) == ("off", 168, True)
    assert (auth.login_attempts, auth.login_window_seconds) == (5, 300)


def test_the_records_database_defaults_to_sqlite_inside_the_data_dir(tmp_path):
    config = load_config(None, environ={"VOICE_AGENT_RECORDS__DATA_DIR": str(tmp_path)})
    assert config.records.url == f"sqlite+aiosqlite:///{tmp_path}/records.db"
    postgres = "postgresql+asyncpg://voice@db/records"
    assert load_config(None, environ={"VOICE_AGENT_RECORDS__DATABASE_URL": postgres}).records.url == postgres


def test_an_environment_variable_overrides_a_records_key_from_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("records:\n  max_upload_bytes: 1000\n  audio_format: ogg\n")
    config = load_config(path, environ={"VOICE_AGENT_RECORDS__MAX_UPLOAD_BYTES": "5000"})
    assert (config.records.max_upload_bytes, config.records.audio_format) == (5000, "ogg")


def test_auth_mode_off_written_unquoted_in_yaml_means_off(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("auth:\n  mode: off\n")
    assert load_config(path, environ={}).auth.mode == "off"
    assert load_config(None, environ={"VOICE_AGENT_AUTH__MODE": "token"}).auth.mode == "token"
    with pytest.raises(ConfigError, match=r"invalid value True for auth\.mode; allowed values: off, token"):
        load_config(None, environ={"VOICE_AGENT_AUTH__MODE": "on"})


@pytest.mark.parametrize(
    "name, value, message",
    [
        (
            "VOICE_AGENT_RECORDS__DATADIR",
            "/x",
            r"unknown config key records\.datadir; allowed keys in records: .*data_dir",
        ),
        (
            "VOICE_AGENT_AUTH__TOKEN_TTL",
            "1",
            r"unknown config key auth\.token_ttl; allowed keys in auth: .*token_ttl_hours",
        ),
        ("VOICE_AGENT_RECORDS__AUDIO_FORMAT", "mp3", r"'mp3' for records\.audio_format; allowed values: flac, ogg"),
        ("VOICE_AGENT_AUTH__MODE", "password", r"'password' for auth\.mode; allowed values: off, token"),
        (
            "VOICE_AGENT_RECORDS__MAX_UPLOAD_BYTES",
            "0",
            r"0 for records\.max_upload_bytes; expected a value greater than 0",
        ),
        (
            "VOICE_AGENT_RECORDS__RETENTION_DAYS",
            "-1",
            r"records\.retention_days; expected a value greater than or equal",
        ),
        ("VOICE_AGENT_RECORDS__ENABLED", "yes please", r"records\.enabled; allowed values: true, false"),
        ("VOICE_AGENT_SERVER__ALLOWED_ORIGINS", "https://a.example", r"server\.allowed_origins; expected a list"),
        ("VOICE_AGENT_SERVER__MAX_REQUEST_BYTES", "-5", r"server\.max_request_bytes; expected a value greater than 0"),
    ],
)
def test_a_bad_records_auth_or_server_key_stops_start_up_naming_the_key_and_what_is_allowed(name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, environ={name: value})
