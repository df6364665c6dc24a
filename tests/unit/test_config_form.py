"""The Configure form's file handling: fields from a config, written back, validated as check does."""

from __future__ import annotations

import pytest
import yaml

from console.core.config import load_config
from console.core.config_form import check_form, form_from_config, save_form
from console.core.errors import ConfigError

ORIGINAL = """\
# my comment
server: {host: 203.0.113.7, port: 2222}
tunnel: {retry_max: 10}
units:
  master:
    username: sop001
    ssh_port: 10022
    forwards:
      - {name: vnc, remote_port: 15900, local: "10.0.0.9:5900"}
"""


def test_fields_round_trip_and_other_settings_stay(tmp_path):
    path = tmp_path / "console.yaml"
    path.write_text(ORIGINAL)
    form = form_from_config(load_config(path))
    assert (form.host, form.port, form.units["master"].username, form.units["master"].ssh_port) == \
        ("203.0.113.7", "2222", "sop001", "10022")
    assert form.units["clone"].ssh_port == ""
    form.units["master"].http_port = "10080"
    form.units["clone"].username = "sop002"
    form.units["clone"].ssh_port = "10023"
    config = save_form(path, form)
    assert [f.name for f in config.units["master"].forwards] == ["vnc", "ssh", "http"]  # vnc kept
    assert config.units["clone"].forwards[0].remote_port == 10023
    assert config.tunnel.retry_max == 10  # untouched
    assert (tmp_path / "console.yaml.bak").read_text() == ORIGINAL
    assert load_config(path).units == config.units  # what was saved reads back the same
    assert "ssh_port" not in yaml.safe_load(path.read_text())["units"]["master"]  # canonical now
    assert (path.stat().st_mode & 0o777) == 0o600


def test_an_existing_forward_keeps_what_the_form_does_not_show(tmp_path):
    path = tmp_path / "console.yaml"
    path.write_text("server: {host: h}\nunits:\n  master:\n    forwards:\n"
                    "      - {name: ssh, remote_port: 10022, remote_bind: 127.0.0.1, local: '10.0.0.5:2222'}\n")
    form = form_from_config(load_config(path))
    assert form.units["master"].target == "10.0.0.5"
    form.units["master"].ssh_port = "10122"
    (ssh,) = save_form(path, form).units["master"].forwards
    assert (ssh.remote_port, ssh.remote_bind, ssh.local) == (10122, "127.0.0.1", "10.0.0.5:2222")


def test_errors_in_checks_words_naming_the_field(tmp_path):
    path = tmp_path / "console.yaml"
    path.write_text(ORIGINAL)
    form = form_from_config(load_config(path))
    form.units["master"].ssh_port = "70000"
    form.port = "ssh"
    with pytest.raises(ConfigError) as info:
        check_form(path, form)
    assert "units.master.ssh.remote_port: must be 1-65535 or 0, got 70000" in info.value.problems
    assert any(p.startswith("server.port: must be a whole number") for p in info.value.problems)
    with pytest.raises(ConfigError):
        save_form(path, form)
    assert path.read_text() == ORIGINAL  # nothing written
    assert not (tmp_path / "console.yaml.bak").exists()


def test_a_new_file_from_the_form(tmp_path):
    from console.core.config_form import ConfigForm

    form = ConfigForm(host="example.net")
    form.units["master"].ssh_port = "10022"
    form.units["master"].app_port = "10090"
    with pytest.raises(ConfigError) as info:
        save_form(tmp_path / "new.yaml", form)
    assert info.value.problems == ["units.master.app.local: must be host:port (port 1-65535), such as 127.0.0.1:22, "
                                   "got '127.0.0.1:'"]
    form.units["master"].app_target_port = "8443"
    config = save_form(tmp_path / "new.yaml", form)
    assert set(config.units) == {"master"} and config.units["master"].forwards[1].local == "127.0.0.1:8443"


def test_the_files_text_is_checked_as_check_does_and_saved_keeping_a_backup(tmp_path):
    """Configure's text editor, for a file the form cannot read: the same parser, file:line, atomic, .bak."""
    import stat

    from console.core.config_form import save_text

    path = tmp_path / "console.yaml"
    broken = ORIGINAL.replace("username:", "usernme:")
    path.write_text(broken)
    path.chmod(0o640)
    with pytest.raises(ConfigError) as info:
        save_text(path, broken + "tunnel: {retry_max: 100000000}\n")
    assert f"{path}:6: units.master.usernme: unknown key (did you mean 'username'?)" in info.value.problems
    assert path.read_text() == broken and not (tmp_path / "console.yaml.bak").exists()  # nothing written
    config = save_text(path, ORIGINAL)
    assert config.units["master"].username == "sop001"
    assert path.read_text() == ORIGINAL  # the text as typed, comments and all
    assert (tmp_path / "console.yaml.bak").read_text() == broken
    assert stat.S_IMODE((tmp_path / "console.yaml.bak").stat().st_mode) == 0o640
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_file_whose_server_is_endpoints_default_keeps_that_form(tmp_path):
    """The form's server is the endpoint default: written where the file has it, never as a second one."""
    path = tmp_path / "console.yaml"
    path.write_text("endpoints:\n  default: {host: a.example, comment: main}\n  edge: {host: e.example}\n"
                    "units:\n  master: {endpoint: edge, ssh_port: 10022}\n  clone: {ssh_port: 10023}\n")
    form = form_from_config(load_config(path))
    assert (form.host, form.port) == ("a.example", "22")
    form.host, form.port = "b.example", "2222"
    config = save_form(path, form)
    assert "server" not in yaml.safe_load(path.read_text())
    assert config.endpoints["default"].address == "b.example:2222" and config.endpoints["default"].comment == "main"
    assert config.units["master"].server.host == "e.example" and config.units["clone"].server.host == "b.example"
    form.port = "ssh"
    with pytest.raises(ConfigError) as info:
        check_form(path, form)
    assert any(p.startswith("server.port: must be a whole number") for p in info.value.problems)
