"""Settings parsing and the command line: clear errors, documented options."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from incident_operator.cli import main as cli_main
from incident_operator.settings.config import ConfigError, OperatorConfig, load_config_file


def test_defaults_follow_the_procedure() -> None:
    config = OperatorConfig()
    targets = config.file.responseTargets
    assert (
        timedelta(minutes=15),
        timedelta(hours=1),
        timedelta(hours=4),
        timedelta(hours=24),
    ) == (targets.P1, targets.P2, targets.P3, targets.P4)
    assert config.clusterwide
    assert config.http_port == 8080
    assert config.status_port == 8081


def test_namespaces_make_it_namespaced() -> None:
    assert not OperatorConfig(namespaces=("a", "b")).clusterwide


def test_config_file_overrides_response_targets(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("responseTargets:\n  P1: PT5M\n")
    loaded = load_config_file(path)
    assert timedelta(minutes=5) == loaded.responseTargets.P1
    assert timedelta(hours=1) == loaded.responseTargets.P2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("responseTargets: [", "not valid YAML"),
        ("responseTarget:\n  P1: PT5M\n", "is invalid"),
        ("responseTargets:\n  P1: soon\n", "is invalid"),
    ],
)
def test_bad_config_file_gives_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config_file(tmp_path / "nope.yaml")


def test_help_documents_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main.main(["run", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--namespace",
        "--http-port",
        "--status-port",
        "--config",
        "/healthz",
        "kubectl apply -f crds/",
    ):
        assert option in out


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main([]) == 2
    assert "run" in capsys.readouterr().out


def test_cli_rejects_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["run", "--http-port", "70000"]) == 2
    assert "invalid option" in capsys.readouterr().err


def test_the_status_page_needs_a_port_of_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["run", "--http-port", "9000", "--status-port", "9000"]) == 2
    assert "--http-port and --status-port must differ" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("base", "says"),
    [
        ("status.example.com", "http:// or https://"),
        ("ftp://status.example.com", "http:// or https://"),
        ("https://user:pw@status.example.com", "user:password@"),
        ("https://evil.example@status.example.com", "user:password@"),
        ("https://status.example.com/#x", "no #fragment"),
        ("https://status.example.com/?a=b", "no ?query"),
        ("https://status.example.com/'><script>", "quotes or angle brackets"),
        ("https://status.example.com:99999", "not a URL"),
    ],
)
def test_the_status_page_base_url_is_checked(tmp_path: Path, base: str, says: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"statusPage: {{baseURL: {base!r}}}\n")
    with pytest.raises(ConfigError, match="baseURL") as raised:
        load_config_file(path)
    assert says in str(raised.value)


def test_the_status_page_base_url_may_have_a_path(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("statusPage: {baseURL: 'https://example.com/ops/'}\n")
    assert load_config_file(path).statusPage.baseURL == "https://example.com/ops"


def test_cli_reports_a_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_limits_and_egress_have_safe_defaults_and_refuse_bad_entries(tmp_path: Path) -> None:
    config = OperatorConfig()
    assert config.file.limits.maxReplicas == 100
    assert config.file.limits.maxEvidenceBytes < 1_048_576  # under the ConfigMap size limit
    assert config.file.egress.allow == ()
    assert config.file.alertIntake.maxAlertsPerRequest == 1000
    path = tmp_path / "config.yaml"
    path.write_text("egress: {allow: ['10.0.0.0/8', 'hooks.slack.com'], deny: ['10.1.0.0/16']}\n")
    assert load_config_file(path).egress.allow == ("10.0.0.0/8", "hooks.slack.com")
    path.write_text("egress: {deny: ['http://x']}\n")
    with pytest.raises(ConfigError, match="neither a CIDR nor a host name"):
        load_config_file(path)


def test_allow_egress_on_the_command_line_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["run", "--allow-egress", "*.example.com"]) == 2
    assert "neither a CIDR nor a host name" in capsys.readouterr().err


def test_alert_tokens_are_bound_to_namespaces(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "alertIntake:\n"
        "  tokens:\n"
        "    - {secretRef: {namespace: ops, name: alert-tokens, key: team-a}, namespaces: [a]}\n"
        "    - {secretRef: {namespace: ops, name: alert-token-b}, namespaces: [b, b2]}\n"
    )
    tokens = load_config_file(path).alertIntake.tokens
    assert [(t.secretRef.name, t.secretRef.key, t.namespaces) for t in tokens] == [
        ("alert-tokens", "team-a", ("a",)),
        ("alert-token-b", "token", ("b", "b2")),  # key defaults to `token`
    ]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ("[{secretRef: {namespace: ops, name: t}}]", "namespaces"),  # required
        ("[{secretRef: {namespace: ops, name: t}, namespaces: []}]", "at least 1"),
        ("[{secretRef: {namespace: ops, name: t}, namespaces: [Bad_NS]}]", "not namespace names"),
        ('[{secretRef: {namespace: ops, name: t}, namespaces: ["shop\\n"]}]', "not namespace names"),
        ("[{secretRef: {name: t}, namespaces: [a]}]", "namespace"),
        ("[{secretRef: {namespace: ops, name: t, key: ''}, namespaces: [a]}]", "key"),
        ("[{secretRef: {namespace: ops, name: t}, namespaces: [a], extra: 1}]", "Extra inputs"),
        (
            "[{secretRef: {namespace: ops, name: t}, namespaces: [a]},"
            " {secretRef: {namespace: ops, name: t}, namespaces: [b]}]",
            "the same Secret key in two tokens: ops/t key token",
        ),
    ],
)
def test_bad_alert_tokens_give_a_clear_error(tmp_path: Path, tokens: str, message: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"alertIntake:\n  tokens: {tokens}\n")
    with pytest.raises(ConfigError, match=message):
        load_config_file(path)


def test_the_single_token_may_not_also_be_a_bound_one(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "alertIntake: {tokens: [{secretRef: {namespace: ops, name: alert-token}, namespaces: [a]}]}\n"
    )
    assert cli_main.main(["run", "--config", str(path), "--alert-token-secret", "ops/alert-token"]) == 2
    # Another key of the same Secret is another token.
    path.write_text(
        "alertIntake: {tokens: [{secretRef: {namespace: ops, name: alert-token, key: a}, namespaces: [a]}]}\n"
    )
    file = load_config_file(path)
    assert OperatorConfig(alert_token_secret=("ops", "alert-token"), file=file).file is file
