import pytest

from agent.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config


def test_the_shipped_default_config_loads_and_matches_the_typed_defaults():
    assert load_config(DEFAULT_CONFIG_PATH, environ={}) == Config()


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
